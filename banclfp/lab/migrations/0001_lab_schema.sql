-- Version 1 of the lab database (docs/labo-serveur.md): every test of every Pi, its rows for
-- charts, and who may write what. Applied once by `lab_sync.py --migrate`, in one transaction.

CREATE SCHEMA IF NOT EXISTS lab;

-- The group roles: a Pi's login role is a member of banc_pi, readers' of banc_reader.
-- Roles belong to the whole cluster, so another lab database on it may have made them already.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'banc_pi') THEN
    CREATE ROLE banc_pi NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'banc_reader') THEN
    CREATE ROLE banc_reader NOLOGIN;
  END IF;
END $$;

-- Which login role writes for which site: filled by the lab manager when a Pi is added.
CREATE TABLE lab.sites (
  site text PRIMARY KEY CHECK (site ~ '^[A-Za-z0-9-]{1,32}$'),
  db_role name NOT NULL UNIQUE,
  added_at timestamptz NOT NULL DEFAULT now()
);

-- The site the connected role writes for (NULL for a role that is no Pi's).
CREATE FUNCTION lab.my_site() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = lab, pg_catalog
AS $$ SELECT site FROM lab.sites WHERE db_role = session_user $$;

-- One row per test folder of a Pi. test_id = 'SITE:bancN/DDMMYYYY-SERIAL[-K]': the folder's
-- name is given at the test's first start and never changes, so neither does the id, and a
-- database refilled from the folders gives every test the same id again.
CREATE TABLE lab.tests (
  test_id text PRIMARY KEY,
  site text NOT NULL,
  banc text NOT NULL,
  folder text NOT NULL,               -- bancN/DDMMYYYY-SERIAL[-K], relative to the Pi's data/
  serial text NOT NULL,
  serial_key text NOT NULL,           -- upper case: RW-ab12 and RW-AB12 are one battery
  start_at timestamptz,
  end_at timestamptz,
  status text NOT NULL,
  phase integer,
  grade text,
  soh_pct double precision,
  model text,
  grading_version text,
  reason text,
  verdict jsonb,                      -- config.json's verdict as it is, checks included
  capacity_ah double precision,
  capacity_wh double precision,
  ri_discharge_25c_ohm double precision,
  ri_charge_25c_ohm double precision,
  diffusion_discharge_25c_ohm double precision,
  diffusion_charge_25c_ohm double precision,
  data_sha256 text,                   -- of data.csv, once the test is finished
  certificate bytea,
  certificate_sha256 text,
  content_sha256 text NOT NULL,       -- of every field above but the certificate: an unchanged test is not rewritten
  edited_on_disk boolean NOT NULL DEFAULT false,  -- a graded test that changed on its Pi afterwards (see lab.test_revisions)
  synced_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (site, folder),
  CHECK (test_id = site || ':' || folder)
);
CREATE INDEX tests_serial_key ON lab.tests (serial_key, start_at DESC);
CREATE INDEX tests_newest ON lab.tests (start_at DESC NULLS LAST, folder DESC);

-- A test's rows for charts: the first row of data.csv (in file order) in each 5 s bucket of
-- measured_at, so that rows are at most 10 s apart wherever the Pi recorded. Insert-only.
CREATE TABLE lab.test_rows (
  test_id text NOT NULL REFERENCES lab.tests (test_id) ON DELETE CASCADE,
  site text NOT NULL,
  bucket bigint NOT NULL,             -- floor(epoch(measured_at) / 5)
  measured_at timestamptz NOT NULL,
  step smallint,
  voltage_v real,
  current_a real,
  soc_pct real,
  temperature_c real,
  capacity_ah real,
  energy_wh real,
  cell_min_mv real,
  cell_max_mv real,
  PRIMARY KEY (test_id, bucket),
  CHECK (starts_with(test_id, site || ':'))  -- a row carries its test's site, which RLS checks
);

-- What a graded test said before its folder was edited by hand: never overwritten in silence.
CREATE TABLE lab.test_revisions (
  test_id text NOT NULL,
  site text NOT NULL,
  replaced_at timestamptz NOT NULL DEFAULT now(),
  previous jsonb NOT NULL
);

CREATE FUNCTION lab.keep_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.verdict IS NOT NULL AND OLD.content_sha256 IS DISTINCT FROM NEW.content_sha256 THEN
    INSERT INTO lab.test_revisions (test_id, site, previous)
      VALUES (OLD.test_id, OLD.site, to_jsonb(OLD) - 'certificate');
    NEW.edited_on_disk := true;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER tests_keep_revision BEFORE UPDATE ON lab.tests FOR EACH ROW EXECUTE FUNCTION lab.keep_revision();

-- Who may do what: a Pi reads the whole lab (the 48 h rule, the history) but writes only its
-- own site's rows (row-level security); a reader only reads; nobody but the owner deletes.
GRANT USAGE ON SCHEMA lab TO banc_pi, banc_reader;
GRANT SELECT ON lab.tests, lab.test_rows, lab.sites, lab.test_revisions TO banc_pi, banc_reader;
GRANT INSERT, UPDATE ON lab.tests TO banc_pi;
GRANT INSERT ON lab.test_rows, lab.test_revisions TO banc_pi;
GRANT EXECUTE ON FUNCTION lab.my_site() TO banc_pi, banc_reader;
REVOKE ALL ON FUNCTION lab.my_site() FROM PUBLIC;

ALTER TABLE lab.tests ENABLE ROW LEVEL SECURITY;
ALTER TABLE lab.test_rows ENABLE ROW LEVEL SECURITY;
ALTER TABLE lab.test_revisions ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON lab.tests FOR SELECT TO banc_pi, banc_reader USING (true);
CREATE POLICY pi_inserts_own ON lab.tests FOR INSERT TO banc_pi WITH CHECK (site = lab.my_site());
CREATE POLICY pi_updates_own ON lab.tests FOR UPDATE TO banc_pi
  USING (site = lab.my_site()) WITH CHECK (site = lab.my_site());
CREATE POLICY everyone_reads ON lab.test_rows FOR SELECT TO banc_pi, banc_reader USING (true);
CREATE POLICY pi_inserts_own ON lab.test_rows FOR INSERT TO banc_pi WITH CHECK (site = lab.my_site());
CREATE POLICY everyone_reads ON lab.test_revisions FOR SELECT TO banc_pi, banc_reader USING (true);
CREATE POLICY pi_inserts_own ON lab.test_revisions FOR INSERT TO banc_pi WITH CHECK (site = lab.my_site());
