//! `phigate synth`: a synthetic EHR data set (clinics, patients, encounters, diagnoses, lab
//! observations, medications) for demos, development and benchmarks. Never real patients:
//! names are drawn from fixed lists, SSNs are in the 9xx range no person is issued, phone
//! numbers are 555-01xx, postal codes start with 00.
//!
//! The data set is a pure function of the seed and the number of patients: each patient's
//! records come from a generator seeded with the seed and the patient's id, so any table can
//! be written on its own, in any order, and identically on every run.

mod vocab;

use std::io::{self, Write};
use std::ops::RangeInclusive;

use chrono::{Duration, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The tables of the synthetic schema, in load order (references point backwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// clinics (no PHI)
    Clinics,
    /// patients: identifiers and demographics
    Patients,
    /// visits, with free-text notes
    Encounters,
    /// ICD-10 codes per encounter
    Diagnoses,
    /// LOINC lab results per encounter
    Observations,
    /// prescriptions per patient
    Medications,
}

impl Table {
    /// Every table, in load order.
    pub const ALL: [Table; 6] = [
        Self::Clinics,
        Self::Patients,
        Self::Encounters,
        Self::Diagnoses,
        Self::Observations,
        Self::Medications,
    ];

    /// The table's name (in schema `public`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Clinics => "clinics",
            Self::Patients => "patients",
            Self::Encounters => "encounters",
            Self::Diagnoses => "diagnoses",
            Self::Observations => "observations",
            Self::Medications => "medications",
        }
    }

    /// Its columns, in the order rows are written.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Clinics => &["id", "name", "city"],
            Self::Patients => &[
                "id",
                "clinic_id",
                "mrn",
                "full_name",
                "ssn",
                "birth_date",
                "sex",
                "address",
                "phone",
            ],
            Self::Encounters => &[
                "id",
                "patient_id",
                "clinic_id",
                "started_at",
                "kind",
                "notes",
            ],
            Self::Diagnoses => &["id", "encounter_id", "clinic_id", "icd10", "noted_on"],
            Self::Observations => &[
                "id",
                "encounter_id",
                "clinic_id",
                "loinc",
                "value",
                "unit",
                "observed_at",
            ],
            Self::Medications => &[
                "id",
                "patient_id",
                "clinic_id",
                "drug",
                "dose",
                "started_on",
            ],
        }
    }
}

/// The schema: the `phigate_encrypted` domain and the tables, protected columns declared as
/// `phigate_encrypted` (run it as the tables' owner, directly against PostgreSQL).
pub fn schema_sql() -> String {
    format!(
        "{}{}",
        crate::crypto::BACKSTOP_SQL,
        include_str!("schema.sql")
    )
}

/// The example policy set for this schema (the repository's `policies/`): file name and
/// text, `roles.toml` first. Its users' password is `demo`.
pub const EXAMPLE_POLICIES: [(&str, &str); 7] = [
    ("roles.toml", include_str!("../../policies/roles.toml")),
    ("users.toml", include_str!("../../policies/users.toml")),
    (
        "patients.toml",
        include_str!("../../policies/patients.toml"),
    ),
    (
        "encounters.toml",
        include_str!("../../policies/encounters.toml"),
    ),
    (
        "diagnoses.toml",
        include_str!("../../policies/diagnoses.toml"),
    ),
    (
        "observations.toml",
        include_str!("../../policies/observations.toml"),
    ),
    (
        "medications.toml",
        include_str!("../../policies/medications.toml"),
    ),
];

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// COPY's text format (tab-separated, `\N` for NULL)
    Text,
    /// CSV (empty unquoted field for NULL), without a header
    Csv,
}

/// A synthetic data set: `patients` patients spread over clinics, from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Synth {
    seed: u64,
    patients: u64,
}

/// One patient's records, in the columns' order.
struct Chart {
    patient: Vec<Option<String>>,
    encounters: Vec<Vec<Option<String>>>,
    diagnoses: Vec<Vec<Option<String>>>,
    observations: Vec<Vec<Option<String>>>,
    medications: Vec<Vec<Option<String>>>,
}

fn pick<'a, T>(rng: &mut StdRng, list: &'a [T]) -> &'a T {
    &list[rng.random_range(0..list.len())]
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

impl Synth {
    /// The data set of `patients` patients (at least 1) generated from `seed`.
    pub fn new(seed: u64, patients: u64) -> Self {
        Self {
            seed,
            patients: patients.max(1),
        }
    }

    /// The number of clinics: one per 2,500 patients, at least 3, at most 36.
    pub fn clinics(&self) -> u64 {
        (self.patients / 2500).clamp(3, 36)
    }

    /// Writes every row of `table` to `out`; returns the number of rows.
    pub fn write(&self, table: Table, format: Format, out: &mut impl Write) -> io::Result<u64> {
        self.write_rows(table, format, self.sources(table), out)
    }

    /// What the rows of `table` are generated from: clinic ids for clinics, patient ids
    /// for every other table.
    pub fn sources(&self, table: Table) -> RangeInclusive<u64> {
        match table {
            Table::Clinics => 1..=self.clinics(),
            _ => 1..=self.patients,
        }
    }

    /// Writes the rows of `table` generated from `ids` (a part of [`Self::sources`]);
    /// returns the number of rows.
    pub(crate) fn write_rows(
        &self,
        table: Table,
        format: Format,
        ids: RangeInclusive<u64>,
        out: &mut impl Write,
    ) -> io::Result<u64> {
        let mut rows = 0;
        let mut line = String::with_capacity(256);
        let mut result = Ok(());
        self.each_row(table, ids, |row| {
            if result.is_ok() {
                line.clear();
                encode_row(row, format, &mut line);
                rows += 1;
                result = out.write_all(line.as_bytes());
            }
        });
        result.map(|()| rows)
    }

    /// Calls `f` with each row of `table` generated from `ids`, fields as text (`None` for
    /// NULL) in the order of [`Table::columns`].
    pub fn each_row(
        &self,
        table: Table,
        ids: RangeInclusive<u64>,
        mut f: impl FnMut(&[Option<String>]),
    ) {
        for id in ids {
            if table == Table::Clinics {
                f(&self.clinic(id));
                continue;
            }
            let chart = self.chart(id);
            let rows = match table {
                Table::Patients => std::slice::from_ref(&chart.patient),
                Table::Encounters => &chart.encounters,
                Table::Diagnoses => &chart.diagnoses,
                Table::Observations => &chart.observations,
                Table::Medications => &chart.medications,
                Table::Clinics => &[],
            };
            rows.iter().for_each(|r| f(r));
        }
    }

    fn clinic(&self, id: u64) -> Vec<Option<String>> {
        let i = (id - 1) as usize;
        let (town, state) = vocab::TOWNS[i % vocab::TOWNS.len()];
        let stem = vocab::CLINICS[i % vocab::CLINICS.len()];
        vec![
            Some(id.to_string()),
            Some(format!("{stem} ({town})")),
            Some(format!("{town}, {state}")),
        ]
    }

    fn chart(&self, id: u64) -> Chart {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id);
        let clinic = ((id - 1) % self.clinics() + 1).to_string();
        let s = |v: String| Some(v);
        let birth = NaiveDate::from_ymd_opt(1935, 1, 1).unwrap_or_default()
            + Duration::days(rng.random_range(0..32_000));
        let (town, state) = pick(&mut rng, vocab::TOWNS);
        let patient = vec![
            s(id.to_string()),
            s(clinic.clone()),
            s(format!("SYN{id:07}")),
            s(format!(
                "{} {}",
                pick(&mut rng, vocab::FIRST_NAMES),
                pick(&mut rng, vocab::LAST_NAMES)
            )),
            rng.random_bool(0.95).then(|| {
                format!(
                    "9{:02}-{:02}-{:04}",
                    rng.random_range(0..100),
                    rng.random_range(1..100),
                    rng.random_range(1..10_000)
                )
            }),
            s(birth.to_string()),
            s(pick(&mut rng, &["F", "M", "X"]).to_string()),
            s(format!(
                "{} {}, {town}, {state} 00{:03}",
                rng.random_range(1..9999),
                pick(&mut rng, vocab::STREETS),
                rng.random_range(0..1000)
            )),
            s(format!(
                "+1-{}-555-01{:02}",
                rng.random_range(201..990),
                rng.random_range(0..100)
            )),
        ];
        let mut chart = Chart {
            patient,
            encounters: Vec::new(),
            diagnoses: Vec::new(),
            observations: Vec::new(),
            medications: Vec::new(),
        };
        for k in 0..rng.random_range(1..=4u64) {
            self.encounter(&mut rng, id, id * 100 + k, &clinic, &mut chart);
        }
        for j in 0..rng.random_range(0..=3u64) {
            let (drug, dose) = pick(&mut rng, vocab::MEDICATIONS);
            let on = epoch() + Duration::days(rng.random_range(7_300..9_800));
            chart.medications.push(vec![
                s((id * 10 + j).to_string()),
                s(id.to_string()),
                s(clinic.clone()),
                s(drug.to_string()),
                s(dose.to_string()),
                s(on.to_string()),
            ]);
        }
        chart
    }

    fn encounter(&self, rng: &mut StdRng, patient: u64, id: u64, clinic: &str, chart: &mut Chart) {
        let s = |v: String| Some(v);
        let day = epoch() + Duration::days(rng.random_range(7_671..9_830));
        let at = format!(
            "{day} {:02}:{:02}:00+00",
            rng.random_range(7..19),
            rng.random_range(0..4) * 15
        );
        let notes = format!(
            "Patient reports {}. Plan: {}.",
            pick(rng, vocab::COMPLAINTS),
            pick(rng, vocab::PLANS)
        );
        chart.encounters.push(vec![
            s(id.to_string()),
            s(patient.to_string()),
            s(clinic.to_owned()),
            s(at.clone()),
            s(pick(rng, vocab::ENCOUNTER_KINDS).to_string()),
            rng.random_bool(0.9).then_some(notes),
        ]);
        for j in 0..rng.random_range(1..=2u64) {
            chart.diagnoses.push(vec![
                s((id * 10 + j).to_string()),
                s(id.to_string()),
                s(clinic.to_owned()),
                s(pick(rng, vocab::ICD10).to_string()),
                s(day.to_string()),
            ]);
        }
        for j in 0..rng.random_range(0..=3u64) {
            let (loinc, unit, low, high) = *pick(rng, vocab::LABS);
            let value = low + (high - low) * rng.random::<f64>();
            chart.observations.push(vec![
                s((id * 10 + j).to_string()),
                s(id.to_string()),
                s(clinic.to_owned()),
                s(loinc.to_owned()),
                s(format!("{value:.1}")),
                s(unit.to_owned()),
                s(at.clone()),
            ]);
        }
    }
}

/// Appends one row in `format`, with its line end.
fn encode_row(row: &[Option<String>], format: Format, out: &mut String) {
    for (i, field) in row.iter().enumerate() {
        if i > 0 {
            out.push(if format == Format::Text { '\t' } else { ',' });
        }
        match (field, format) {
            (None, Format::Text) => out.push_str("\\N"),
            (None, Format::Csv) => {}
            (Some(v), Format::Text) => {
                for c in v.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\t' => out.push_str("\\t"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
            }
            (Some(v), Format::Csv) if v.contains([',', '"', '\n', '\r']) || v.is_empty() => {
                out.push('"');
                out.push_str(&v.replace('"', "\"\""));
                out.push('"');
            }
            (Some(v), Format::Csv) => out.push_str(v),
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &Synth, t: Table) -> String {
        let mut out = Vec::new();
        s.write(t, Format::Text, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = Synth::new(7, 50);
        for t in Table::ALL {
            assert_eq!(text(&a, t), text(&Synth::new(7, 50), t), "{}", t.name());
        }
        assert_ne!(
            text(&a, Table::Patients),
            text(&Synth::new(8, 50), Table::Patients)
        );
    }

    #[test]
    fn rows_have_every_column_and_obviously_fake_identifiers() {
        let s = Synth::new(1, 200);
        for t in Table::ALL {
            for line in text(&s, t).lines() {
                assert_eq!(line.split('\t').count(), t.columns().len(), "{line}");
            }
        }
        for line in text(&s, Table::Patients).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            assert!(f[2].starts_with("SYN"));
            assert!(
                f[4] == "\\N" || (f[4].starts_with('9') && f[4].len() == 11),
                "{}",
                f[4]
            );
            assert!(f[8].contains("-555-01"));
        }
    }

    #[test]
    fn references_point_at_rows_that_exist() {
        let s = Synth::new(3, 100);
        let ids = |t: Table| -> std::collections::HashSet<String> {
            text(&s, t)
                .lines()
                .map(|l| l.split('\t').next().unwrap().to_owned())
                .collect()
        };
        let (patients, encounters) = (ids(Table::Patients), ids(Table::Encounters));
        assert_eq!(patients.len(), 100);
        for l in text(&s, Table::Diagnoses).lines() {
            assert!(encounters.contains(l.split('\t').nth(1).unwrap()));
        }
        for l in text(&s, Table::Encounters).lines() {
            assert!(patients.contains(l.split('\t').nth(1).unwrap()));
        }
        assert_eq!(
            ids(Table::Diagnoses).len(),
            text(&s, Table::Diagnoses).lines().count()
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut line = String::new();
        encode_row(
            &[
                Some("a,b".into()),
                None,
                Some("say \"hi\"".into()),
                Some(String::new()),
            ],
            Format::Csv,
            &mut line,
        );
        assert_eq!(line, "\"a,b\",,\"say \"\"hi\"\"\",\"\"\n");
    }
}
