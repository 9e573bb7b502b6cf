//! Statement kinds, as counted in metrics, derived from PostgreSQL's command tags.

/// The kind of a completed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
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

impl StatementKind {
    /// Every kind, for pre-registering metric labels.
    pub const ALL: [StatementKind; 10] = [
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
    pub fn from_tag(tag: &str) -> Self {
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
        assert_eq!(StatementKind::from_tag("SELECT 3"), StatementKind::Select);
        assert_eq!(StatementKind::from_tag("INSERT 0 1"), StatementKind::Insert);
        assert_eq!(StatementKind::from_tag("CREATE TABLE"), StatementKind::Ddl);
        assert_eq!(
            StatementKind::from_tag("ROLLBACK"),
            StatementKind::Transaction
        );
        assert_eq!(
            StatementKind::from_tag("PREPARE TRANSACTION"),
            StatementKind::Transaction
        );
        assert_eq!(StatementKind::from_tag("PREPARE"), StatementKind::Other);
        assert_eq!(StatementKind::from_tag("SET"), StatementKind::Other);
        assert_eq!(StatementKind::from_tag(""), StatementKind::Other);
    }
}
