//! PostgreSQL's `numeric` in its canonical text form (what phigate encrypts) and in the
//! binary wire format (base-10000 digits).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Moves the decimal point of `int.frac` by `exp` places, as PostgreSQL reads `1.5e3`: the
/// scale is the fraction's length less the exponent, at least 0.
fn apply_exponent(int: &str, frac: &str, exp: i64) -> Res<(String, String)> {
    if exp.unsigned_abs() > 1000 {
        return Err("exponent out of range");
    }
    let digits = format!("{int}{frac}");
    let point = i64::try_from(int.len()).map_err(|_| "too long")? + exp;
    let scale = usize::try_from((i64::try_from(frac.len()).unwrap_or(0) - exp).max(0)).unwrap_or(0);
    let (int, frac) = if point <= 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        ("0".to_owned(), format!("{zeros}{digits}"))
    } else {
        let point = usize::try_from(point).unwrap_or(0);
        if point >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point - digits.len())),
                String::new(),
            )
        } else {
            (digits[..point].to_owned(), digits[point..].to_owned())
        }
    };
    let mut frac = frac;
    frac.truncate(scale);
    while frac.len() < scale {
        frac.push('0');
    }
    Ok((int, frac))
}

/// `[-]digits[.digits][e[-]digits]`, `NaN`, `[-]Infinity`: sign kept only when negative,
/// integer part without leading zeros, fraction as written (an exponent moves the point,
/// as PostgreSQL does).
pub(super) fn normalise_numeric(s: &str) -> Res<String> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Ok("NaN".into()),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok("Infinity".into()),
        "-infinity" | "-inf" => return Ok("-Infinity".into()),
        _ => {}
    }
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.split_once(['e', 'E']) {
        Some((m, e)) => {
            let e = e.strip_prefix('+').unwrap_or(e);
            let valid = !e.is_empty()
                && e.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit());
            let e: i64 = valid
                .then(|| e.parse().ok())
                .flatten()
                .ok_or("not a decimal number")?;
            (m, Some(e))
        }
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err("not a decimal number");
    }
    let moved;
    let (int, frac) = match exp {
        Some(e) => {
            moved = apply_exponent(int, frac, e)?;
            (moved.0.as_str(), moved.1.as_str())
        }
        None => (int, frac),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let mut out = String::with_capacity(t.len() + 1);
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Ok(out)
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Normalised numeric text to PostgreSQL's binary form (base-10000 digits).
pub(super) fn numeric_to_binary(s: &str) -> Res<Vec<u8>> {
    let special = match s {
        "NaN" => Some(NUMERIC_NAN),
        "Infinity" => Some(NUMERIC_PINF),
        "-Infinity" => Some(NUMERIC_NINF),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(sign) = special {
        for v in [0u16, 0, sign, 0] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        return Ok(out);
    }
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let dscale = u16::try_from(frac.len()).map_err(|_| "too many fraction digits")?;
    // Pad the integer part on the left and the fraction on the right to whole groups.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut all = "0".repeat(int_pad);
    all.push_str(int);
    let int_groups = all.len() / 4;
    all.push_str(frac);
    all.push_str(&"0".repeat(frac_pad));
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = i64::try_from(int_groups).map_err(|_| "too large")? - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "too many digits")?;
    let weight = i16::try_from(weight).map_err(|_| "too large")?;
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign = if neg { NUMERIC_NEG } else { 0 };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// PostgreSQL's binary numeric to normalised text.
pub(super) fn numeric_from_binary(v: &[u8]) -> Res<String> {
    let word = |i: usize| -> Res<u16> {
        v.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or("truncated")
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    if v.len() != 8 + 2 * ndigits {
        return Err("wrong length");
    }
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        0 | NUMERIC_NEG => {}
        _ => return Err("bad sign"),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(8 + 2 * i)?;
        if d > 9999 {
            return Err("bad digit");
        }
        digits.push(d);
    }
    let digit_at = |w: i64| -> u16 {
        // the group of weight w (group 0 has weight `weight`)
        usize::try_from(weight - w)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut int = String::new();
    for w in (0..=weight.max(0)).rev() {
        int.push_str(&format!("{:04}", digit_at(w)));
    }
    let mut frac = String::new();
    let mut w = -1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit_at(w)));
        w -= 1;
    }
    frac.truncate(dscale);
    let mut text = String::new();
    if sign == NUMERIC_NEG {
        text.push('-');
    }
    text.push_str(&int);
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    normalise_numeric(&text)
}
