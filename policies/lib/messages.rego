# The shape of every failure a policy reports, so that all policies agree on
# it: `[FAIL] <SEVERITY> - <text> (<ERRCODE>)` (docs/policies.md). Alerts,
# Events and existing tooling parse this text; keep it stable.
#
# Messages are built with concat, not sprintf: rego-cpp 1.5's sprintf puts
# quotes around string arguments that come from string literals
# (`sprintf("<%v>", [x])` with `x := "y"` gives `<"y">`).
package magtape.lib.messages

import rego.v1

fail_message(severity, text, errcode) := concat("", ["[FAIL] ", severity, " - ", text, " (", errcode, ")"])

# violation(meta, text) is one element of a policy's `deny` set, built from
# its policy_metadata and the human-readable text of the failure.
violation(meta, text) := {
	"name": meta.name,
	"severity": meta.severity,
	"errcode": meta.errcode,
	"msg": fail_message(meta.severity, text, meta.errcode),
}

# The same, with a "details" object for machines (metrics, alerts).
violation_with_details(meta, text, details) := object.union(violation(meta, text), {"details": details})

# str(x) is x as text: strings as they are, anything else as sprintf %v
# prints it (30100, 1.5, null). Lets messages name values of any type.
str(x) := x if is_string(x)

str(x) := sprintf("%v", [x]) if not is_string(x)

# quoted(x) is str(x) between double quotes, the way messages name things.
quoted(x) := concat("", ["\"", str(x), "\""])
