# Kubernetes resource quantities ("64Mi", "100M", "1Gi", "500m", 1024) as
# plain numbers, so that policies compare sizes whatever unit a manifest uses.
package magtape.lib.quantity

import rego.v1

# value(q) is the quantity in base units (bytes for memory and storage);
# undefined when q is not a valid quantity.
#
# units.parse follows Kubernetes: binary suffixes (Ki, Mi, Gi, ...) are powers
# of 1024, decimal ones (k, M, G, ...) powers of 1000, and "m" is milli, not
# mega (units.parse_bytes would read "100m" as 100 megabytes).
value(q) := q if is_number(q)

value(q) := units.parse(q) if is_string(q)
