-- phigate's service login: neither owner nor superuser.
CREATE ROLE phigate_svc LOGIN PASSWORD 'phigate-svc-pw';
GRANT CONNECT ON DATABASE ehr TO phigate_svc;
GRANT USAGE, CREATE ON SCHEMA public TO phigate_svc;
