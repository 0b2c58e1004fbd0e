# MT1005 pdb: a PodDisruptionBudget states minAvailable/maxUnavailable as a
# percentage within a range that lets nodes drain. See README.md in this folder.
package kubernetes.admission.pdb

import rego.v1

import data.magtape.lib.messages

policy_metadata := {
	"name": "pdb",
	"severity": "HIGH",
	"errcode": "MT1005",
	"targets": {"PodDisruptionBudget"},
}

# policy_metadata.targets, tested with == rather than `in`: rego-cpp would
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
	text := concat("", ["Value ", messages.quoted(value), " for ", messages.quoted(field), " should be a Percentage, not an Integer"])
	info := messages.failure("pdb", "HIGH", "MT1005", text, {"field": field, "value": value})
}

deny contains info if {
	matches
	some field, range in ranges
	value := input.request.object.spec[field]
	percent := percentage(value)
	not within(percent, range)
	text := concat("", [
		"Value (", value, ") for ", messages.quoted(field), " not within range ",
		messages.str(range.low), "%-", messages.str(range.high), "%",
	])
	info := messages.failure("pdb", "HIGH", "MT1005", text, {"field": field, "value": value})
}

# The API server keeps an int-or-string: a number, or a string of digits
# written by a tool that quotes everything.
is_integer_value(value) if is_number(value)

is_integer_value(value) if regex.match(`^[0-9]+$`, value)

# percentage("25%") is 25.
percentage(value) := to_number(trim_suffix(value, "%")) if {
	is_string(value)
	regex.match(`^[0-9]+(\.[0-9]+)?%$`, value)
}

within(percent, range) if {
	range.low <= percent
	percent <= range.high
}
