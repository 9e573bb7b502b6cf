-- phigate's database-side backstop: protected columns are declared with this domain, so
-- that only a well-formed phigate envelope can be stored in them. A write that bypasses
-- phigate (or a phigate bug) cannot store plaintext there.
--
-- Envelope: version (1) | mode (1 randomized, 2 deterministic) | key id (4 bytes) |
-- nonce (12 bytes) | ciphertext + 16-byte tag, so at least 34 bytes.
--
-- Run once per database (psql -f, or `phigate schema | psql`); it is idempotent. The domain
-- is created in the first schema of the search_path (normally public).
DO $phigate$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'phigate_encrypted') THEN
    CREATE DOMAIN phigate_encrypted AS bytea
      CONSTRAINT phigate_envelope CHECK (
        VALUE IS NULL OR (
          octet_length(VALUE) >= 34
          AND get_byte(VALUE, 0) = 1
          AND get_byte(VALUE, 1) IN (1, 2)
        )
      );
    COMMENT ON DOMAIN phigate_encrypted IS 'phigate column-encryption envelope, version 1';
  END IF;
END
$phigate$;
