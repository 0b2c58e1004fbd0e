# Kubernetes resource quantities ("64Mi", "100M", "1Gi", "500m", 1024) as
# plain numbers, so that policies compare sizes whatever unit a manifest uses.
#
# Engine-neutral (docs/policies.md, "Writing engine-neutral Rego"): OPA's
# units.parse answers "undefined" for text it cannot read, where regorus
# raises an error, and the two disagree on a few spellings ("5.M", "5n",
# "5e"). So the text is checked against Kubernetes' own quantity grammar
# first, and only the spellings both engines read alike reach units.parse.
package magtape.lib.quantity

import rego.v1

# A signed decimal number ("5", "5.", ".5", "050") and at most one suffix:
# binary (Ki .. Ei, powers of 1024), decimal (n, u, m, k, M .. E, powers of
# 1000; "m" is milli, not mega) or a decimal exponent (e3, E-2).
# (k8s.io/apimachinery/pkg/api/resource, Quantity.)
grammar := `^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$`

# value(q) is the quantity in base units (bytes for memory and storage);
# undefined when q is neither a number nor a quantity in Kubernetes' syntax.
value(q) := q if is_number(q)

value(q) := units.parse(canonical(q)) if {
	is_string(q)
	regex.match(grammar, q)
}

# canonical(q) spells a quantity of the grammar the way both engines'
# units.parse read it: no dot without digits after it ("5." and "5.M" are
# "5" and "5M"), and the sub-milli suffixes as exponents ("5n" is "5e-9").
canonical(q) := suffixed(replace(q, ".", "")) if {
	regex.match(`\.([^0-9]|$)`, q)
} else := suffixed(q)

suffixed(q) := concat("", [trim_suffix(q, "n"), "e-9"]) if {
	endswith(q, "n")
} else := concat("", [trim_suffix(q, "u"), "e-6"]) if {
	endswith(q, "u")
} else := q
