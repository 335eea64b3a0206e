-- Token rows of codings whose display is the one the server's code tables know for them
-- (src/search/known_displays.rs). `:text` finds the words of such a display through this row, so
-- they are not stored again as blind word rows. Rows written before this column existed keep 0
-- and their word rows, which searches still read.
ALTER TABLE search_token ADD COLUMN known_display BIGINT NOT NULL DEFAULT 0;
