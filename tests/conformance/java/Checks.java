// pgjdbc through phigate, against a protected table (encrypted columns, a row policy) and
// a pass-through table. Run by tests/conformance.rs with PROXY_* set, as
// `java -cp postgresql.jar Checks.java`. Prints one line per check, then
// 'N passed, N failed'; exits 1 when a check failed.

import java.sql.*;
import java.util.*;

public class Checks {
    interface Check { void run(Connection c) throws Exception; }

    static final LinkedHashMap<String, Check> CHECKS = new LinkedHashMap<>();

    static void eq(Object got, Object expected) {
        if (!Objects.equals(got, expected)) {
            throw new AssertionError("got " + got + ", expected " + expected);
        }
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PROXY_HOST") + ":" + System.getenv("PROXY_PORT")
            + "/" + System.getenv("PROXY_DB") + "?sslmode=disable";
        return DriverManager.getConnection(url, System.getenv("PROXY_USER"), System.getenv("PROXY_PASSWORD"));
    }

    static void reset(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute("DELETE FROM patients");
            s.execute("DELETE FROM notes");
        }
    }

    static {
        CHECKS.put("PreparedStatement with setInt, setString, setDate, setObject, setNull", c -> {
            reset(c);
            try (PreparedStatement p = c.prepareStatement(
                    "INSERT INTO patients (clinic_id, ssn, full_name, birth_date) VALUES (?, ?, ?, ?)")) {
                p.setInt(1, 3);
                p.setString(2, "123-45-6789");
                p.setString(3, "Grace");
                p.setDate(4, java.sql.Date.valueOf("1906-12-09"));
                eq(p.executeUpdate(), 1);
                p.setInt(1, 3);
                p.setObject(2, "222-22-2222");
                p.setNull(3, Types.VARCHAR);
                p.setObject(4, java.time.LocalDate.of(1815, 12, 10));
                eq(p.executeUpdate(), 1);
            }
            try (PreparedStatement p = c.prepareStatement(
                    "SELECT full_name, birth_date FROM patients WHERE ssn = ?")) {
                p.setString(1, "123-45-6789");
                try (ResultSet r = p.executeQuery()) {
                    eq(r.next(), true);
                    eq(r.getString(1), "Grace");
                    eq(r.getDate(2).toString(), "1906-12-09");
                }
                p.setString(1, "222-22-2222");
                try (ResultSet r = p.executeQuery()) {
                    eq(r.next(), true);
                    eq(r.getString(1), null);
                    eq(r.getObject(2, java.time.LocalDate.class), java.time.LocalDate.of(1815, 12, 10));
                }
            }
        });
        CHECKS.put("executeBatch with generated keys", c -> {
            reset(c);
            try (PreparedStatement p = c.prepareStatement(
                    "INSERT INTO patients (clinic_id, ssn, full_name) VALUES (?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                for (int i = 0; i < 5; i++) {
                    p.setInt(1, 3);
                    p.setString(2, "000-00-000" + i);
                    p.setString(3, "P" + i);
                    p.addBatch();
                }
                int[] counts = p.executeBatch();
                eq(counts.length, 5);
                int keys = 0;
                try (ResultSet r = p.getGeneratedKeys()) {
                    while (r.next()) keys++;
                }
                eq(keys, 5);
            }
        });
        CHECKS.put("server-side prepare after the threshold", c -> {
            reset(c);
            try (PreparedStatement p = c.prepareStatement("INSERT INTO patients (clinic_id, ssn) VALUES (?, ?)")) {
                for (int i = 0; i < 3; i++) {
                    p.setInt(1, 3);
                    p.setString(2, "111-11-111" + i);
                    p.executeUpdate();
                }
            }
            try (PreparedStatement p = c.prepareStatement("SELECT ssn FROM patients WHERE ssn = ?")) {
                for (int i = 0; i < 8; i++) {
                    p.setString(1, "111-11-111" + (i % 3));
                    try (ResultSet r = p.executeQuery()) {
                        eq(r.next(), true);
                        eq(r.getString(1), "111-11-111" + (i % 3));
                    }
                }
            }
        });
        CHECKS.put("transactions and updates", c -> {
            reset(c);
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("INSERT INTO patients (clinic_id, ssn) VALUES (?, ?)")) {
                p.setInt(1, 3);
                p.setString(2, "333-33-3333");
                p.executeUpdate();
            }
            c.rollback();
            try (PreparedStatement p = c.prepareStatement("INSERT INTO patients (clinic_id, ssn) VALUES (?, ?)")) {
                p.setInt(1, 3);
                p.setString(2, "444-44-4444");
                p.executeUpdate();
            }
            c.commit();
            c.setAutoCommit(true);
            try (PreparedStatement p = c.prepareStatement("UPDATE patients SET full_name = ? WHERE ssn = ?")) {
                p.setString(1, "Dee");
                p.setString(2, "444-44-4444");
                eq(p.executeUpdate(), 1);
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM patients")) {
                r.next();
                eq(r.getLong(1), 1L);
            }
        });
        CHECKS.put("every setter on encrypted columns of every type", c -> {
            try (Statement s = c.createStatement()) {
                s.execute("DELETE FROM vitals");
            }
            java.util.UUID ref = java.util.UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
            java.time.OffsetDateTime at = java.time.OffsetDateTime.of(2020, 3, 4, 5, 6, 7, 0, java.time.ZoneOffset.ofHours(2));
            try (PreparedStatement p = c.prepareStatement(
                    "INSERT INTO vitals (mrn, weight, smoker, seen, seen_at, ref, visits, beds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")) {
                p.setLong(1, 9000000000123L);
                p.setBigDecimal(2, new java.math.BigDecimal("72.50"));
                p.setBoolean(3, true);
                p.setTimestamp(4, java.sql.Timestamp.valueOf("2020-03-04 05:06:07.891"));
                p.setObject(5, at);
                p.setObject(6, ref);
                p.setInt(7, 12);
                p.setShort(8, (short) 3);
                eq(p.executeUpdate(), 1);
            }
            try (PreparedStatement p = c.prepareStatement(
                    "SELECT mrn, weight, smoker, seen, seen_at, ref, visits, beds FROM vitals WHERE mrn = ? AND ref = ?")) {
                p.setLong(1, 9000000000123L);
                p.setObject(2, ref);
                try (ResultSet r = p.executeQuery()) {
                    eq(r.next(), true);
                    eq(r.getLong(1), 9000000000123L);
                    eq(r.getBigDecimal(2), new java.math.BigDecimal("72.50"));
                    eq(r.getBoolean(3), true);
                    eq(r.getTimestamp(4), java.sql.Timestamp.valueOf("2020-03-04 05:06:07.891"));
                    eq(r.getObject(5, java.time.OffsetDateTime.class).toInstant(), at.toInstant());
                    eq(r.getObject(6), ref);
                    eq(r.getInt(7), 12);
                    eq(r.getShort(8), (short) 3);
                    eq(r.next(), false);
                }
            }
        });
        CHECKS.put("updatable ResultSet: updateRow, insertRow, deleteRow", c -> {
            reset(c);
            try (Statement s = c.createStatement()) {
                s.execute("INSERT INTO patients (clinic_id, ssn, full_name) VALUES (3, '123-45-6789', 'Grace')");
            }
            try (Statement s = c.createStatement(ResultSet.TYPE_FORWARD_ONLY, ResultSet.CONCUR_UPDATABLE);
                 ResultSet r = s.executeQuery("SELECT id, clinic_id, ssn, full_name FROM patients")) {
                eq(r.next(), true);
                r.updateString("full_name", "Grace Hopper");
                r.updateRow();
                eq(r.getString("full_name"), "Grace Hopper");
                r.moveToInsertRow();
                r.updateInt("clinic_id", 3);
                r.updateString("ssn", "222-22-2222");
                r.updateString("full_name", "Ada");
                r.insertRow();
            }
            try (Statement s = c.createStatement(ResultSet.TYPE_SCROLL_INSENSITIVE, ResultSet.CONCUR_UPDATABLE);
                 ResultSet r = s.executeQuery("SELECT id, ssn, full_name FROM patients WHERE ssn = '222-22-2222'")) {
                eq(r.next(), true);
                eq(r.getString("full_name"), "Ada");
                r.deleteRow();
            }
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT ssn, full_name FROM patients")) {
                eq(r.next(), true);
                eq(r.getString(1), "123-45-6789");
                eq(r.getString(2), "Grace Hopper");
                eq(r.next(), false);
            }
        });
        CHECKS.put("Statement.executeBatch of literal inserts, and two statements in one execute", c -> {
            reset(c);
            try (Statement s = c.createStatement()) {
                s.addBatch("INSERT INTO patients (clinic_id, ssn, full_name) VALUES (3, '300-00-0001', 'One')");
                s.addBatch("INSERT INTO patients (clinic_id, ssn, full_name) VALUES (3, '300-00-0002', 'Two')");
                s.addBatch("UPDATE patients SET full_name = 'Uno' WHERE ssn = '300-00-0001'");
                eq(Arrays.toString(s.executeBatch()), "[1, 1, 1]");
                eq(s.execute("UPDATE patients SET note = 'seen' WHERE ssn = '300-00-0002'; "
                    + "SELECT full_name, note FROM patients WHERE ssn = '300-00-0002'"), false);
                eq(s.getUpdateCount(), 1);
                eq(s.getMoreResults(), true);
                try (ResultSet r = s.getResultSet()) {
                    eq(r.next(), true);
                    eq(r.getString(1), "Two");
                    eq(r.getString(2), "seen");
                }
                try (ResultSet r = s.executeQuery("SELECT full_name FROM patients WHERE ssn = '300-00-0001'")) {
                    eq(r.next(), true);
                    eq(r.getString(1), "Uno");
                }
            }
        });
        CHECKS.put("fetch size, max rows, parameter and result metadata before execution", c -> {
            reset(c);
            try (PreparedStatement p = c.prepareStatement(
                    "INSERT INTO patients (clinic_id, ssn, full_name, birth_date) VALUES (?, ?, ?, ?)")) {
                ParameterMetaData m = p.getParameterMetaData();
                eq(m.getParameterCount(), 4);
                eq(m.getParameterTypeName(2), "text");
                eq(m.getParameterTypeName(4), "date");
                for (int i = 0; i < 7; i++) {
                    p.setInt(1, 3);
                    p.setString(2, "500-00-000" + i);
                    p.setString(3, "F" + i);
                    p.setDate(4, java.sql.Date.valueOf("2001-02-03"));
                    p.addBatch();
                }
                p.executeBatch();
            }
            try (PreparedStatement p = c.prepareStatement(
                    "SELECT ssn, full_name, birth_date FROM patients WHERE clinic_id = ? ORDER BY id")) {
                ResultSetMetaData m = p.getMetaData();
                eq(m.getColumnTypeName(1), "text");
                eq(m.getColumnTypeName(3), "date");
                p.setMaxRows(3);
                p.setInt(1, 3);
                int n = 0;
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) n++;
                }
                eq(n, 3);
            }
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("SELECT full_name FROM patients ORDER BY id")) {
                p.setFetchSize(2);
                List<String> names = new ArrayList<>();
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) names.add(r.getString(1));
                }
                eq(names, List.of("F0", "F1", "F2", "F3", "F4", "F5", "F6"));
            }
            c.commit();
            c.setAutoCommit(true);
        });
        CHECKS.put("pass-through table", c -> {
            try (PreparedStatement p = c.prepareStatement("INSERT INTO notes (body, created) VALUES (?, ?)")) {
                p.setString(1, "hello");
                p.setDate(2, java.sql.Date.valueOf("2020-01-02"));
                eq(p.executeUpdate(), 1);
            }
        });
    }

    public static void main(String[] args) throws Exception {
        int passed = 0, failed = 0;
        for (Map.Entry<String, Check> e : CHECKS.entrySet()) {
            try (Connection c = connect()) {
                e.getValue().run(c);
                passed++;
                System.out.println("ok     " + e.getKey());
            } catch (Throwable t) {
                failed++;
                System.out.println("FAILED " + e.getKey());
                t.printStackTrace(System.out);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
