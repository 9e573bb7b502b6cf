// Hibernate ORM 3.6 (libhibernate3-java, the distribution's, as long-lived Java
// applications run it) with pgjdbc through phigate, against the protected table (encrypted
// columns, a row policy) and the pass-through table. Run by tests/conformance.rs with
// PROXY_* set, as `java -cp <jars> HibernateChecks.java`. Prints one line per check, then
// 'N passed, N failed'; exits 1 when a check failed.

import java.util.*;
import javax.persistence.*;
import org.hibernate.Criteria;
import org.hibernate.Session;
import org.hibernate.SessionFactory;
import org.hibernate.Transaction;
import org.hibernate.cfg.Configuration;
import org.hibernate.criterion.Order;
import org.hibernate.criterion.Projections;
import org.hibernate.criterion.Restrictions;

public class HibernateChecks {
    @Entity
    @Table(name = "patients")
    @org.hibernate.annotations.Proxy(lazy = false)
    public static class Patient {
        @Id
        @GeneratedValue(strategy = GenerationType.IDENTITY)
        public Integer id;

        @Column(name = "clinic_id", nullable = false)
        public int clinicId;

        // encrypted columns are stored as phigate_encrypted, which schema validation reads
        @Column(columnDefinition = "phigate_encrypted")
        public String ssn;

        @Column(name = "full_name", columnDefinition = "phigate_encrypted")
        public String fullName;

        @Temporal(TemporalType.DATE)
        @Column(name = "birth_date", columnDefinition = "phigate_encrypted")
        public Date birthDate;

        public String note;

        public Patient() {}

        Patient(int clinicId, String ssn, String fullName, Date birthDate) {
            this.clinicId = clinicId;
            this.ssn = ssn;
            this.fullName = fullName;
            this.birthDate = birthDate;
        }
    }

    @Entity
    @Table(name = "notes")
    @org.hibernate.annotations.Proxy(lazy = false)
    public static class Note {
        @Id
        @GeneratedValue(strategy = GenerationType.SEQUENCE, generator = "notes")
        @SequenceGenerator(name = "notes", sequenceName = "notes_id_seq", allocationSize = 1)
        public Integer id;

        public String body;

        @Temporal(TemporalType.DATE)
        public Date created;
    }

    interface Check { void run(Session s) throws Exception; }

    static final LinkedHashMap<String, Check> CHECKS = new LinkedHashMap<>();

    static void eq(Object got, Object expected) {
        if (!Objects.equals(got, expected)) {
            throw new AssertionError("got " + got + ", expected " + expected);
        }
    }

    static Date day(String iso) {
        return java.sql.Date.valueOf(iso);
    }

    static SessionFactory factory(String ddl) {
        String url = "jdbc:postgresql://" + System.getenv("PROXY_HOST") + ":" + System.getenv("PROXY_PORT")
            + "/" + System.getenv("PROXY_DB") + "?sslmode=disable";
        return new Configuration()
            .setProperty("hibernate.dialect", "org.hibernate.dialect.PostgreSQLDialect")
            .setProperty("hibernate.connection.driver_class", "org.postgresql.Driver")
            .setProperty("hibernate.connection.url", url)
            .setProperty("hibernate.connection.username", System.getenv("PROXY_USER"))
            .setProperty("hibernate.connection.password", System.getenv("PROXY_PASSWORD"))
            .setProperty("hibernate.connection.pool_size", "2")
            .setProperty("hibernate.jdbc.batch_size", "20")
            .setProperty("hibernate.hbm2ddl.auto", ddl)
            .addAnnotatedClass(Patient.class)
            .addAnnotatedClass(Note.class)
            .buildSessionFactory();
    }

    /** Runs `work` in a transaction of its own, committed. */
    static void inTransaction(Session s, Check work) throws Exception {
        Transaction t = s.beginTransaction();
        work.run(s);
        t.commit();
        s.clear();
    }

    static void reset(Session s) throws Exception {
        inTransaction(s, x -> {
            x.createSQLQuery("DELETE FROM patients").executeUpdate();
            x.createSQLQuery("DELETE FROM notes").executeUpdate();
        });
    }

    static Integer grace(Session s) throws Exception {
        Patient p = new Patient(3, "123-45-6789", "Grace Hopper", day("1906-12-09"));
        inTransaction(s, x -> x.save(p));
        return p.id;
    }

    static {
        CHECKS.put("save and get an entity with encrypted fields (identity key)", s -> {
            reset(s);
            Integer id = grace(s);
            Patient p = (Patient) s.get(Patient.class, id);
            eq(p.ssn, "123-45-6789");
            eq(p.fullName, "Grace Hopper");
            eq(p.birthDate.toString(), "1906-12-09");
            eq(p.clinicId, 3);
        });
        CHECKS.put("HQL by a deterministic field, a named parameter and a date", s -> {
            reset(s);
            grace(s);
            List<?> found = s.createQuery("from HibernateChecks$Patient p where p.ssn = :ssn")
                .setParameter("ssn", "123-45-6789").list();
            eq(found.size(), 1);
            eq(((Patient) found.get(0)).fullName, "Grace Hopper");
            List<?> names = s.createQuery(
                    "select p.fullName from HibernateChecks$Patient p where p.birthDate = :born")
                .setDate("born", day("1906-12-09")).list();
            eq(names, List.of("Grace Hopper"));
        });
        CHECKS.put("Criteria with ordering, paging and a count", s -> {
            reset(s);
            inTransaction(s, x -> {
                for (int i = 0; i < 5; i++) {
                    x.save(new Patient(3, "000-00-000" + i, "P" + i, null));
                }
            });
            Criteria c = s.createCriteria(Patient.class)
                .add(Restrictions.eq("clinicId", 3))
                .addOrder(Order.asc("id"))
                .setFirstResult(1).setMaxResults(2);
            List<?> page = c.list();
            eq(page.size(), 2);
            eq(((Patient) page.get(0)).fullName, "P1");
            eq(((Patient) page.get(1)).ssn, "000-00-0002");
            Object count = s.createCriteria(Patient.class)
                .add(Restrictions.eq("ssn", "000-00-0004"))
                .setProjection(Projections.rowCount()).uniqueResult();
            eq(count, 1L);
        });
        CHECKS.put("dirty checking updates encrypted fields; merge; delete", s -> {
            reset(s);
            Integer id = grace(s);
            inTransaction(s, x -> {
                Patient p = (Patient) x.get(Patient.class, id);
                p.fullName = "Grace B. Hopper";
                p.note = "updated";
            });
            eq(((Patient) s.get(Patient.class, id)).fullName, "Grace B. Hopper");
            s.clear();
            Patient detached = new Patient(3, "123-45-6789", "Rear Admiral Hopper", day("1906-12-09"));
            detached.id = id;
            inTransaction(s, x -> x.merge(detached));
            eq(((Patient) s.get(Patient.class, id)).fullName, "Rear Admiral Hopper");
            s.clear();
            inTransaction(s, x -> x.delete(x.get(Patient.class, id)));
            eq(s.get(Patient.class, id), null);
        });
        CHECKS.put("HQL bulk update and delete by an encrypted field", s -> {
            reset(s);
            grace(s);
            inTransaction(s, x -> eq(x.createQuery(
                    "update HibernateChecks$Patient set fullName = :n where ssn = :ssn")
                .setParameter("n", "Amazing Grace").setParameter("ssn", "123-45-6789")
                .executeUpdate(), 1));
            eq(s.createQuery("select fullName from HibernateChecks$Patient").list(), List.of("Amazing Grace"));
            inTransaction(s, x -> eq(x.createQuery(
                    "delete from HibernateChecks$Patient where ssn = :ssn")
                .setParameter("ssn", "123-45-6789").executeUpdate(), 1));
            eq(s.createQuery("select count(*) from HibernateChecks$Patient").uniqueResult(), 0L);
        });
        CHECKS.put("JDBC batching of 50 inserts (batch_size 20)", s -> {
            reset(s);
            inTransaction(s, x -> {
                for (int i = 0; i < 50; i++) {
                    x.save(new Patient(3, String.format("900-00-%04d", i), "B" + i, day("2000-01-01")));
                }
            });
            eq(s.createQuery("select count(*) from HibernateChecks$Patient p where p.birthDate = :d")
                .setDate("d", day("2000-01-01")).uniqueResult(), 50L);
            eq(s.createQuery("select fullName from HibernateChecks$Patient where ssn = '900-00-0042'")
                .uniqueResult(), "B42");
        });
        CHECKS.put("IN and IS NULL restrictions, a row lock, refresh, scroll with a fetch size", s -> {
            reset(s);
            inTransaction(s, x -> {
                for (int i = 0; i < 5; i++) {
                    x.save(new Patient(3, "100-00-000" + i, i == 4 ? null : "S" + i, null));
                }
            });
            List<?> two = s.createCriteria(Patient.class)
                .add(Restrictions.in("ssn", List.of("100-00-0001", "100-00-0003")))
                .addOrder(Order.asc("id")).list();
            eq(two.size(), 2);
            eq(((Patient) two.get(1)).fullName, "S3");
            Patient unnamed = (Patient) s.createCriteria(Patient.class)
                .add(Restrictions.isNull("fullName")).uniqueResult();
            eq(unnamed.ssn, "100-00-0004");
            inTransaction(s, x -> {
                Patient locked = (Patient) x.get(Patient.class, unnamed.id, org.hibernate.LockOptions.UPGRADE);
                eq(locked.ssn, "100-00-0004");
                locked.fullName = "Named";
                x.flush();
                x.refresh(locked);
                eq(locked.fullName, "Named");
            });
            Transaction t = s.beginTransaction();
            org.hibernate.ScrollableResults rows = s.createQuery(
                    "from HibernateChecks$Patient p where p.clinicId = 3 order by p.id")
                .setFetchSize(2).scroll(org.hibernate.ScrollMode.FORWARD_ONLY);
            List<String> ssns = new ArrayList<>();
            while (rows.next()) {
                ssns.add(((Patient) rows.get(0)).ssn);
            }
            rows.close();
            t.commit();
            eq(ssns, List.of("100-00-0000", "100-00-0001", "100-00-0002", "100-00-0003", "100-00-0004"));
        });
        CHECKS.put("native SQL query with a positional parameter", s -> {
            reset(s);
            grace(s);
            List<?> rows = s.createSQLQuery("SELECT full_name FROM patients WHERE ssn = ?")
                .setString(0, "123-45-6789").list();
            eq(rows, List.of("Grace Hopper"));
        });
        CHECKS.put("the row policy refuses another clinic's patient; the session goes on", s -> {
            reset(s);
            Transaction t = s.beginTransaction();
            try {
                s.save(new Patient(4, "444-44-4444", "Elsewhere", null));
                s.flush();
                throw new AssertionError("insert into clinic 4 was accepted");
            } catch (org.hibernate.HibernateException expected) {
                t.rollback();
            }
            s.clear();
            eq(s.createQuery("select count(*) from HibernateChecks$Patient").uniqueResult(), 0L);
        });
        CHECKS.put("pass-through entity with a sequence key", s -> {
            reset(s);
            Note n = new Note();
            n.body = "hello";
            n.created = day("2026-12-04");
            inTransaction(s, x -> x.save(n));
            Note back = (Note) s.get(Note.class, n.id);
            eq(back.body, "hello");
            eq(back.created.toString(), "2026-12-04");
        });
    }

    public static void main(String[] args) throws Exception {
        // the source launcher compiles this file into a class loader of its own, where
        // Hibernate looks for the entities by name
        Thread.currentThread().setContextClassLoader(HibernateChecks.class.getClassLoader());
        int passed = 0, failed = 0;
        try {
            factory("validate").close();
            passed++;
            System.out.println("ok     schema validation (hbm2ddl validate)");
        } catch (Throwable t) {
            failed++;
            System.out.println("FAILED schema validation (hbm2ddl validate)");
            t.printStackTrace(System.out);
        }
        SessionFactory factory = factory("none");
        for (Map.Entry<String, Check> e : CHECKS.entrySet()) {
            Session s = factory.openSession();
            try {
                e.getValue().run(s);
                passed++;
                System.out.println("ok     " + e.getKey());
            } catch (Throwable t) {
                failed++;
                System.out.println("FAILED " + e.getKey());
                t.printStackTrace(System.out);
            } finally {
                s.close();
            }
        }
        factory.close();
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
