-- The service login's privileges on the synthetic schema, and the backup login's.
GRANT USAGE ON SCHEMA public TO phigate_svc, ehr_backup;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO phigate_svc;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO phigate_svc;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ehr_backup;
