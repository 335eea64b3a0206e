-- Whether `compartment` names every Patient the resource references: each of its reference rows
-- to a Patient (through any parameter, patient link or not) is relative and points at that one
-- Patient, or it has none. Where it does, the clinician's rule (some patient link points at a
-- Patient its organisation manages) is answered from the head row, by checking the compartment's
-- Patient (src/search/plan.rs, `Criterion::PatientLink`): the compartment is the first Patient a
-- patient link points at, so every link that points at a Patient points at that one. Where it
-- does not (two Patients, one named by an absolute URL, a logical or `urn:uuid` Patient
-- reference), the rule follows each link as before. 0 is always safe: it only means the slower,
-- link-by-link check; a wrong 1 could answer from the wrong Patient.
--
-- Every write sets it (src/search/index_rows.rs, `compartment_is_complete`); this sets it for the
-- heads already stored, by the same definition over their stored reference rows, which are what
-- the link-by-link check reads. An absent target id is stored as '', which names no compartment.
-- Delete markers have no rows and no compartment: 1, as a write gives them (nothing to follow).
ALTER TABLE resource_heads ADD COLUMN compartment_complete INTEGER NOT NULL DEFAULT 0;
UPDATE resource_heads SET compartment_complete = 1
WHERE NOT EXISTS (
    SELECT 1 FROM search_reference r
    WHERE r.resource_type = resource_heads.resource_type AND r.id = resource_heads.id
      AND r.target_type = 'Patient'
      AND (resource_heads.compartment IS NULL OR r.target_id <> resource_heads.compartment
           OR r.url LIKE '%://%')
);
