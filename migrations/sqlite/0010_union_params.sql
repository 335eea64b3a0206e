-- Observation's `combo-*` parameters are unions of two others (`combo-code` is `code` and
-- `component-code`) and are now answered from their members' rows (src/search/union_params.rs).
-- Their own rows, written before, are never read again; this frees them. Composite and UCUM rows
-- are stored under `combo-…<U+001F>…` names, which the same pattern matches.
DELETE FROM search_token WHERE resource_type = 'Observation' AND param LIKE 'combo-%';
DELETE FROM search_number WHERE resource_type = 'Observation' AND param LIKE 'combo-%';
DELETE FROM search_blind WHERE resource_type = 'Observation' AND param LIKE 'combo-%';
