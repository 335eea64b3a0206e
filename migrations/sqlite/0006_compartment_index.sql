-- `Patient/[id]/$everything` finds a patient's resources by their compartment.
CREATE INDEX resource_heads_compartment ON resource_heads (compartment, resource_type, id);
