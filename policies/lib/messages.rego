# The shape of every failure a policy reports, so that all policies agree on
# it: `[FAIL] <SEVERITY> - <text> (<ERRCODE>)` (docs/policies.md). Alerts,
# Events and existing tooling parse this text; keep it stable.
#
# Every engine must print the same text (docs/policies.md, "Writing
# engine-neutral Rego"), so messages are built with concat, and values of
# other types than strings go through str(): OPA and regorus print some
# numbers differently with sprintf ("1e+20" / "100000000000000000000",
# "1.2345675e+06" / "1234567.5", "0" / "-0").
package magtape.lib.messages

import rego.v1

fail_message(severity, text, errcode) := concat("", ["[FAIL] ", severity, " - ", text, " (", errcode, ")"])

# failure(name, severity, errcode, text, details) is one element of a
# policy's `deny` set, with a "details" object for machines (metrics, alerts).
# name, severity and errcode are the policy's policy_metadata fields, passed
# one by one: reading them out of policy_metadata in a `deny` body builds
# policy_metadata (its targets set too) on every denied request, which costs
# more than the rest of the failure. The built-in policies pass
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

# str(x) is x as text: strings as they are, numbers as number_text shows
# them, anything else as sprintf %v prints it (null, true, [1, "a"]).
str(x) := x if {
	is_string(x)
} else := number_text(x) if {
	is_number(x)
} else := sprintf("%v", [x])

# quoted(x) is str(x) between double quotes, the way messages name things.
quoted(x) := concat("", ["\"", str(x), "\""])

# number_text(n) is n in decimal digits, the same in every engine: integers
# below 10^15 in full ("30100", "100" for 1e2 or 100.0, "0" for -0), other
# numbers below 10^9 with up to six decimals ("1.5", "30100.25"), and
# anything larger, which no Kubernetes field holds, as a fixed text. (OPA
# keeps numbers exactly; regorus uses 64-bit floats beyond 64-bit integers,
# so only these ranges print alike.)
number_text(n) := format_int(n, 10) if {
	abs(n) < 1000000000000000
	abs(n) == floor(abs(n))
} else := decimal_text(n) if {
	abs(n) < 1000000000
} else := "(a number too large to show)"

# decimal_text(n): n rounded to millionths, without trailing zeros.
decimal_text(n) := text if {
	micros := round(abs(n) * 1000000)
	fraction := micros % 1000000
	whole := format_int((micros - fraction) / 1000000, 10)
	sign := sign_of(n, micros)
	digits := trim_right(substring(format_int(fraction + 1000000, 10), 1, 6), "0")
	text := concat("", [sign, whole, dot(digits), digits])
}

sign_of(n, micros) := "-" if {
	n < 0
	micros != 0
} else := ""

dot(digits) := "." if {
	digits != ""
} else := ""
