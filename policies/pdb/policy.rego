# MT1005 pdb: a PodDisruptionBudget states minAvailable/maxUnavailable as a
# percentage within a range that lets nodes drain. See README.md in this folder.
package kubernetes.admission.pdb

import rego.v1

policy_metadata := {
	"name": "pdb",
	"severity": "HIGH",
	"errcode": "MT1005",
	"targets": {"PodDisruptionBudget"},
}

# policy_metadata.targets, tested with == rather than `in`, which would
# build the targets set on every request.
matches if input.request.kind.kind == "PodDisruptionBudget"

# Allowed percentage per field, inclusive.
ranges := {
	"minAvailable": {"low": 0, "high": 66},
	"maxUnavailable": {"low": 33, "high": 100},
}

# An integer count pins a number of pods: it blocks drains as soon as the
# workload scales down (or forever, when it equals the replica count).
deny contains info if {
	matches
	some field, _ in ranges
	value := input.request.object.spec[field]
	is_integer_value(value)
	text := concat("", ["Value ", data.magtape.lib.messages.quoted(value), " for ", data.magtape.lib.messages.quoted(field), " should be a Percentage, not an Integer"])
	info := data.magtape.lib.messages.failure("pdb", "HIGH", "MT1005", text, {"field": field, "value": value})
}

deny contains info if {
	matches
	some field, range in ranges
	value := input.request.object.spec[field]
	is_percentage(value)
	not within(percentage(value), range)
	text := concat("", [
		"Value (", value, ") for ", data.magtape.lib.messages.quoted(field), " not within range ",
		data.magtape.lib.messages.str(range.low), "%-", data.magtape.lib.messages.str(range.high), "%",
	])
	info := data.magtape.lib.messages.failure("pdb", "HIGH", "MT1005", text, {"field": field, "value": value})
}

# The API server keeps an int-or-string: a number, or a string of digits
# written by a tool that quotes everything. (Type guards first: regex.match
# on a number is undefined in OPA, an error in regorus.)
is_integer_value(value) if is_number(value)

is_integer_value(value) if {
	is_string(value)
	regex.match(`^[0-9]+$`, value)
}

# percentage("33.5%") is {"whole": "33", "fraction": "5"}: the digits before
# and after the point, without leading (resp. trailing) zeros. The value is
# compared digit by digit rather than through to_number, which OPA refuses
# for "050" and which regorus rounds to a 64-bit float ("66.0000000000000001").
is_percentage(value) if {
	is_string(value)
	regex.match(`^[0-9]+(\.[0-9]+)?%$`, value)
}

# The whole and fraction digits of a percentage, without insignificant zeros.
# (Called only once is_percentage holds: regorus' compiled mode does not stop
# a body at a function call that is undefined; tests/test_differential.py
# checks that mode against OPA.)
percentage(value) := {"whole": trim_left(parts[0], "0"), "fraction": trim_right(fraction, "0")} if {
	parts := split(trim_suffix(value, "%"), ".")
	fraction := concat("", array.slice(parts, 1, 2))
}

# within(percent, range): low <= whole.fraction <= high, for integer bounds.
# Four or more digits before the point are above every bound (100 at most).
within(percent, range) if {
	count(percent.whole) < 4
	whole := whole_number(percent.whole)
	range.low <= whole
	whole <= range.high
	not above(whole, percent.fraction, range.high)
}

# whole == high with a fraction: above high.
above(whole, fraction, high) if {
	whole == high
	fraction != ""
}

whole_number(digits) := 0 if {
	digits == ""
} else := to_number(digits)
