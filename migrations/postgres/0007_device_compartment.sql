-- Since consent (0005), `Device.patient` puts a Device in its patient's compartment (the
-- `compartment` column that consent, `$everything` and the patient rules read). Devices written
-- before that have no compartment until they are written again; this gives them theirs, from
-- the index rows of that reference (a Device has at most one patient).
UPDATE resource_heads SET compartment = (
    SELECT MIN(r.target_id) FROM search_reference r
    WHERE r.resource_type = 'Device' AND r.id = resource_heads.id
      AND r.param = 'patient' AND r.target_type = 'Patient'
)
WHERE resource_type = 'Device' AND compartment IS NULL AND deleted = 0;
