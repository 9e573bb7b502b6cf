-- Run by the postgres image at first start (as the superuser, in database ehr).
-- Demo passwords: they match docker/upstream-password.txt and docker/admin-password.txt.
CREATE ROLE ehr_owner LOGIN PASSWORD 'ehr-owner-demo-password';
-- phigate's service login: neither owner of the tables, nor superuser, nor BYPASSRLS.
CREATE ROLE phigate_svc LOGIN PASSWORD 'phigate-svc-demo-password';
-- Backups: after row-level security is forced only a BYPASSRLS login can pg_dump.
CREATE ROLE ehr_backup LOGIN BYPASSRLS PASSWORD 'ehr-backup-demo-password';
ALTER DATABASE ehr OWNER TO ehr_owner;
ALTER SCHEMA public OWNER TO ehr_owner;
