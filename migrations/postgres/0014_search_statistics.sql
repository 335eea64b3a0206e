-- Statistics on the columns that a search always names together.
--
-- Every index row condition is `resource_type = … AND param = … AND <value columns> = …`.
-- Without these, PostgreSQL multiplies the frequencies of the columns as if they were
-- independent: the 1,000 Patients of a clinic (`Patient` · `organization` · `Organization` ·
-- `org11`) were estimated at 1 row, and the 70 % of Observations with one code at 5 %. On a
-- restricted caller's search it then built a hash of every Patient of the clinic for each
-- query instead of checking the few resources the search found (benches/README.md, "Search
-- on PostgreSQL: extended statistics"). The MCV lists of these statistics give the
-- frequencies of the common combinations (a clinic, a code); `dependencies` says that a
-- parameter implies its resource type. `ANALYZE` fills them (autovacuum, `fhirvault import`,
-- `fhirvault reindex`, and the end of this migration).
CREATE STATISTICS search_reference_stats (mcv, dependencies)
    ON resource_type, param, target_type, target_id FROM search_reference;
CREATE STATISTICS search_token_stats (mcv, dependencies)
    ON resource_type, param, system, code FROM search_token;
CREATE STATISTICS search_blind_stats (mcv, dependencies)
    ON resource_type, param, token FROM search_blind;
CREATE STATISTICS search_string_stats (mcv, dependencies)
    ON resource_type, param, normalized FROM search_string;
CREATE STATISTICS search_uri_stats (mcv, dependencies)
    ON resource_type, param, value FROM search_uri;
CREATE STATISTICS search_date_stats (mcv, dependencies)
    ON resource_type, param FROM search_date;
CREATE STATISTICS search_number_stats (mcv, dependencies)
    ON resource_type, param, system, code FROM search_number;

-- Columns that hold resource ids keep short statistics. Their most common values and histograms
-- say little (an id is in a handful of rows), yet the planner reads and compares them for every
-- join on an id, and a restricted caller's search joins on ids a dozen times: with the default
-- 100 entries, planning such a search took about 4 ms, with 10 about 2.5 ms, for the same plans.
-- The combinations above keep 100 entries of their own.
ALTER TABLE resource_heads
    ALTER COLUMN id SET STATISTICS 10,
    ALTER COLUMN compartment SET STATISTICS 10;
ALTER TABLE search_reference
    ALTER COLUMN id SET STATISTICS 10,
    ALTER COLUMN target_id SET STATISTICS 10,
    ALTER COLUMN url SET STATISTICS 10;
ALTER STATISTICS search_reference_stats SET STATISTICS 100;

-- Fill them now: autovacuum would analyse a table of an upgraded database only after enough of
-- it changed. ANALYZE reads a sample of each table, but on a large store that takes longer than
-- the server's statement time limit, which applies to the connection this migration runs on.
SET LOCAL statement_timeout = 0;
ANALYZE resource_heads;
ANALYZE search_token;
ANALYZE search_string;
ANALYZE search_reference;
ANALYZE search_date;
ANALYZE search_number;
ANALYZE search_uri;
ANALYZE search_blind;
