//! The kinds of completed commands, as counted in metrics, from PostgreSQL's command tags
//! (the firewall's statement kinds are `policy::StatementKind`).

/// The kind of a completed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// SELECT, FETCH, SHOW, VALUES, TABLE
    Select,
    /// INSERT
    Insert,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// MERGE
    Merge,
    /// COPY
    Copy,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION ...
    Transaction,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, REVOKE, COMMENT
    Ddl,
    /// everything else (SET, DISCARD, LISTEN, VACUUM, ...)
    Other,
    /// a statement that ended in an error
    Failed,
}

impl CommandKind {
    /// Every kind, for pre-registering metric labels.
    pub const ALL: [CommandKind; 10] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Merge,
        Self::Copy,
        Self::Transaction,
        Self::Ddl,
        Self::Other,
        Self::Failed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Merge => "merge",
            Self::Copy => "copy",
            Self::Transaction => "transaction",
            Self::Ddl => "ddl",
            Self::Other => "other",
            Self::Failed => "failed",
        }
    }

    /// The kind named by a CommandComplete tag such as `INSERT 0 1` or `CREATE TABLE`.
    pub(crate) fn from_tag(tag: &str) -> Self {
        let word = tag.split(' ').next().unwrap_or("");
        match word {
            "SELECT" | "FETCH" | "SHOW" | "MOVE" => Self::Select,
            "INSERT" => Self::Insert,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            "MERGE" => Self::Merge,
            "COPY" => Self::Copy,
            "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "END"
            | "ABORT" | "PREPARE"
                if tag != "PREPARE" =>
            {
                Self::Transaction
            }
            "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "GRANT" | "REVOKE" | "COMMENT" => Self::Ddl,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_tags() {
        assert_eq!(CommandKind::from_tag("SELECT 3"), CommandKind::Select);
        assert_eq!(CommandKind::from_tag("INSERT 0 1"), CommandKind::Insert);
        assert_eq!(CommandKind::from_tag("CREATE TABLE"), CommandKind::Ddl);
        assert_eq!(CommandKind::from_tag("ROLLBACK"), CommandKind::Transaction);
        assert_eq!(
            CommandKind::from_tag("PREPARE TRANSACTION"),
            CommandKind::Transaction
        );
        assert_eq!(CommandKind::from_tag("PREPARE"), CommandKind::Other);
        assert_eq!(CommandKind::from_tag("SET"), CommandKind::Other);
        assert_eq!(CommandKind::from_tag(""), CommandKind::Other);
    }
}
