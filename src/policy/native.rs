//! The row policies as native PostgreSQL row-level security: the second layer, which makes
//! the filter a security barrier (PostgreSQL evaluates a caller's leaky conditions only on
//! rows the policy lets through). The policies read session settings that phigate sets
//! upstream for each session: `phigate.role`, `phigate.user.<attribute>`, and
//! `phigate.emergency` (the end of a declared emergency), each through a function that
//! accepts only values tagged with phigate's session key ([`super::session_key`]), so a
//! setting a client managed to make itself counts for nothing.
//!
//! Each native policy's name carries a digest of everything phigate generates for its
//! table, so `serve` can tell whether the installed policies are the current ones.

use sha2::{Digest, Sha256};

use super::rows::{Commands, quote_ident as ident, quote_text};
use super::{PolicySet, TableName, TablePolicy};

/// The native policies of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NativeTable {
    /// the table
    pub table: TableName,
    /// `CREATE POLICY` statements, each naming its policy
    pub policies: Vec<(String, String)>,
}

impl NativeTable {
    /// The statements that put the policies in place, given the names of the phigate
    /// policies installed now (dropped first): enable and force row-level security.
    pub(crate) fn apply_sql(&self, installed: &[String]) -> String {
        let table = qualified(&self.table);
        let mut sql = format!(
            "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\nALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n"
        );
        for name in installed {
            sql.push_str(&format!("DROP POLICY {} ON {table};\n", ident(name)));
        }
        for (_, create) in &self.policies {
            sql.push_str(create);
            sql.push_str(";\n");
        }
        sql
    }

    /// The policy names phigate expects on the table.
    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// The prefix of every policy phigate installs.
pub(crate) const PREFIX: &str = "phigate_";

fn qualified(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.table))
}

/// The verified value of one of phigate's session settings, evaluated once per statement
/// (a scalar subquery becomes an InitPlan).
pub(super) fn setting(name: &str) -> String {
    format!("(SELECT phigate.setting({}))", quote_text(name))
}

/// `phigate.role` is one of `roles`.
fn role_check(roles: &[String]) -> String {
    let list: Vec<String> = roles.iter().map(|r| quote_text(r)).collect();
    format!(
        "{} = ANY (ARRAY[{}]::text[])",
        setting("phigate.role"),
        list.join(", ")
    )
}

/// Rows are visible to roles that bypass row policies, and during a declared emergency.
fn bypass(policies: &PolicySet) -> String {
    let mut roles: Vec<String> = policies
        .roles()
        .filter(|(_, r)| r.bypass_row_policies)
        .map(|(n, _)| n.clone())
        .collect();
    roles.sort();
    let emergency = "(SELECT phigate.emergency())";
    if roles.is_empty() {
        emergency.to_owned()
    } else {
        format!("{} OR {emergency}", role_check(&roles))
    }
}

/// The native policies for every table with row policies.
pub fn tables(policies: &PolicySet) -> Vec<NativeTable> {
    policies
        .tables()
        .filter(|t| !t.policies.is_empty())
        .map(|t| table(policies, t))
        .collect()
}

/// A row policy attribute no user has yet: its type, and so the native policy's text, is
/// unknown until one does. Returns (table, policy, attribute).
pub(crate) fn untyped_attribute(set: &PolicySet) -> Option<(String, String, String)> {
    let types = set.attribute_types();
    set.tables().find_map(|t| {
        t.policies.iter().find_map(|p| {
            p.using
                .iter()
                .chain(p.check.iter())
                .flat_map(|e| e.attributes())
                .find(|a| !types.contains_key(*a))
                .map(|a| (t.name.to_string(), p.name.clone(), a.to_owned()))
        })
    })
}

fn table(set: &PolicySet, t: &TablePolicy) -> NativeTable {
    let types = set.attribute_types();
    let on = qualified(&t.name);
    // (name suffix, command, USING, WITH CHECK)
    let mut bodies: Vec<(String, &str, Option<String>, Option<String>)> = Vec::new();
    let everyone = bypass(set);
    bodies.push((
        "bypass".into(),
        "ALL",
        Some(everyone.clone()),
        Some(everyone),
    ));
    for p in &t.policies {
        let who = role_check(&p.roles);
        let using = p
            .using
            .as_ref()
            .map_or("true".to_owned(), |u| u.native(types));
        let check = p
            .check
            .as_ref()
            .map_or("true".to_owned(), |c| c.native(types));
        let with = |cond: &str| format!("{who} AND ({cond})");
        for (command, name) in [
            (Commands::SELECT, "SELECT"),
            (Commands::UPDATE, "UPDATE"),
            (Commands::DELETE, "DELETE"),
        ] {
            if p.commands.has(command) {
                let checked = (command == Commands::UPDATE).then(|| with(&check));
                bodies.push((
                    format!("{}_{}", p.name, name.to_lowercase()),
                    name,
                    Some(with(&using)),
                    checked,
                ));
            }
        }
        // `check` admits inserts by the policy's roles (DESIGN: "insert is checked with
        // check"), as does listing insert.
        if p.commands.has(Commands::INSERT) || p.check.is_some() {
            bodies.push((
                format!("{}_insert", p.name),
                "INSERT",
                None,
                Some(with(&check)),
            ));
        }
    }
    let mut digest = Sha256::new();
    for (suffix, command, using, check) in &bodies {
        digest.update(format!("{suffix}|{command}|{using:?}|{check:?}\n").as_bytes());
    }
    let tag = &hex::encode(digest.finalize())[..8];
    let policies = bodies
        .into_iter()
        .map(|(suffix, command, using, check)| {
            let name = format!("{PREFIX}{tag}_{suffix}");
            let mut sql = format!(
                "CREATE POLICY {} ON {on} AS PERMISSIVE FOR {command} TO PUBLIC",
                ident(&name)
            );
            if let Some(u) = using {
                sql.push_str(&format!(" USING ({u})"));
            }
            if let Some(c) = check {
                sql.push_str(&format!(" WITH CHECK ({c})"));
            }
            (name, sql)
        })
        .collect();
    NativeTable {
        table: t.name.clone(),
        policies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_becomes_native_policies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("roles.toml"),
            "[roles.clinician]\n[roles.billing]\n[roles.admin]\nbypass_row_policies = true\n",
        )
        .unwrap();
        super::super::add_user(
            &dir.path().join("users.toml"),
            "dr.smith",
            "clinician",
            "pw",
        )
        .unwrap();
        let users = dir.path().join("users.toml");
        let text = std::fs::read_to_string(&users).unwrap();
        std::fs::write(
            &users,
            text.replace("role = ", "attributes = { clinic_id = 3 }\nrole = "),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("visits.toml"),
            "[table]\nname = \"visits\"\n[[policy]]\nname = \"own-clinic\"\nroles = [\"clinician\", \"billing\"]\n\
             commands = [\"select\", \"update\", \"delete\"]\nusing = \"clinic_id = :user.clinic_id\"\n\
             check = \"clinic_id = :user.clinic_id\"\n",
        )
        .unwrap();
        let set = PolicySet::load(dir.path()).unwrap();
        let native = tables(&set);
        assert_eq!(native.len(), 1);
        let names = native[0].names();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with(PREFIX)));
        let sql = native[0].apply_sql(&["phigate_old".into()]);
        assert!(sql.contains("FORCE ROW LEVEL SECURITY"), "{sql}");
        assert!(sql.contains("DROP POLICY \"phigate_old\""), "{sql}");
        assert!(
            sql.contains("(SELECT phigate.setting(E'phigate.role')) = ANY (ARRAY[E'clinician', E'billing']::text[]) AND (clinic_id = (NULLIF((SELECT phigate.setting(E'phigate.user.clinic_id')), ''))::bigint)"),
            "{sql}"
        );
        assert!(sql.contains("ARRAY[E'admin']::text[]) OR"), "{sql}");
        assert!(sql.contains("own-clinic_insert\" ON \"public\".\"visits\" AS PERMISSIVE FOR INSERT TO PUBLIC WITH CHECK"), "{sql}");
        // the names change when the policies do
        std::fs::write(
            dir.path().join("visits.toml"),
            "[table]\nname = \"visits\"\n[[policy]]\nname = \"own-clinic\"\nroles = [\"clinician\"]\n\
             commands = [\"select\"]\nusing = \"clinic_id = :user.clinic_id\"\n",
        )
        .unwrap();
        let changed = tables(&PolicySet::load(dir.path()).unwrap());
        assert_ne!(changed[0].names()[0], names[0]);
    }
}
