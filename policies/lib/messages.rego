# The shape of every failure a policy reports, so that all policies agree on
# it: `[FAIL] <SEVERITY> - <text> (<ERRCODE>)` (docs/policies.md). Alerts,
# Events and existing tooling parse this text; keep it stable.
#
# Messages are built with concat, not sprintf: rego-cpp 1.5's sprintf puts
# quotes around string arguments that come from string literals
# (`sprintf("<%v>", [x])` with `x := "y"` gives `<"y">`).
#
# Elements are plain object literals (no object.union): rego-cpp evaluates
# them noticeably faster, and a denied request builds one per failure.
package magtape.lib.messages

import rego.v1

fail_message(severity, text, errcode) := concat("", ["[FAIL] ", severity, " - ", text, " (", errcode, ")"])

# failure(name, severity, errcode, text, details) is one element of a
# policy's `deny` set, with a "details" object for machines (metrics, alerts).
# name, severity and errcode are the policy's policy_metadata fields, passed
# one by one: in rego-cpp, reading them out of policy_metadata in a `deny`
# body builds policy_metadata (its targets set too) on every denied request,
# which costs more than the rest of the failure. The built-in policies pass
# them as literals; their tests check that these match policy_metadata.
failure(name, severity, errcode, text, details) := {
	"name": name,
	"severity": severity,
	"errcode": errcode,
	"msg": concat("", ["[FAIL] ", severity, " - ", text, " (", errcode, ")"]),
	"details": details,
}

# violation(meta, text) is one element of a policy's `deny` set, built from
# its policy_metadata and the human-readable text of the failure.
violation(meta, text) := {
	"name": meta.name,
	"severity": meta.severity,
	"errcode": meta.errcode,
	"msg": fail_message(meta.severity, text, meta.errcode),
}

# The same, with a "details" object for machines (metrics, alerts).
violation_with_details(meta, text, details) := {
	"name": meta.name,
	"severity": meta.severity,
	"errcode": meta.errcode,
	"msg": fail_message(meta.severity, text, meta.errcode),
	"details": details,
}

# str(x) is x as text: strings as they are, anything else as sprintf %v
# prints it (30100, 1.5, null). Lets messages name values of any type.
str(x) := x if {
	is_string(x)
} else := sprintf("%v", [x])

# quoted(x) is str(x) between double quotes, the way messages name things.
quoted(x) := concat("", ["\"", x, "\""]) if {
	is_string(x)
} else := concat("", ["\"", sprintf("%v", [x]), "\""])
