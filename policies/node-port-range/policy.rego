# MT2002 node-port-range: a NodePort or LoadBalancer Service only uses the
# node ports its namespace was given in the annotation
# k8s.t-mobile.com/nodeportRange. See README.md in this folder.
package kubernetes.admission.node_port_range

import rego.v1

policy_metadata := {
	"name": "node-port-range",
	"severity": "MED",
	"errcode": "MT2002",
	"targets": {"Service"},
}

annotation_key := "k8s.t-mobile.com/nodeportRange"

# Only NodePort and LoadBalancer Services open node ports. (The kind is
# policy_metadata.targets, tested with == rather than `in`, which would
# build the targets set on every request.)
matches if {
	input.request.kind.kind == "Service"
	input.request.object.spec.type in {"NodePort", "LoadBalancer"}
}

# The namespace's annotation, from the replicated cluster data (kube-mgmt
# layout) or, offline, from a data file. Undefined: no restriction.
namespaces := data.kubernetes.namespaces

annotation := namespaces[data.magtape.lib.request.namespace].metadata.annotations[annotation_key]

# The annotation with its whitespace removed ("30100 - 30200" = "30100-30200").
# Undefined when the annotation is not a string (only possible offline, from
# a data file): that is malformed. (The guard first: regex.replace on a
# number is undefined in OPA, an error in regorus.)
spec := regex.replace(annotation, `\s`, "") if is_string(annotation)

unrestricted if not annotation

unrestricted if lower(spec) == "na"

# A port ("30100"), a range ("30100-30200"), or a comma-separated list of
# them, each bound at most 15 digits after its leading zeros (longer numbers
# are not ports, and regorus could not hold them exactly).
well_formed if {
	well_spelled
	every part in split(spec, ",") {
		every bound in split(part, "-") {
			count(trim_left(bound, "0")) <= 15
		}
	}
	every range in ranges {
		range.low <= range.high
	}
}

well_spelled if regex.match(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`, spec)

# The ranges of a well-spelled annotation. (well_spelled is tested here too,
# not only in well_formed: regorus may evaluate this rule on its own, and
# to_number would raise an error on other text.)
ranges contains {"low": port_number(bounds[0]), "high": port_number(bounds[count(bounds) - 1])} if {
	well_spelled
	some part in split(spec, ",")
	bounds := split(part, "-")
}

# port_number("030100") is 30100: leading zeros dropped first, because OPA's
# to_number refuses "030100".
port_number(digits) := 0 if {
	trim_left(digits, "0") == ""
} else := to_number(trim_left(digits, "0")) if {
	count(trim_left(digits, "0")) <= 15
}

allowed(port) if {
	some range in ranges
	range.low <= port
	port <= range.high
}

deny contains info if {
	matches
	not unrestricted
	not well_formed
	text := concat("", ["Invalid data in nodePort annotation in ", data.magtape.lib.messages.quoted(data.magtape.lib.request.namespace), " namespace"])
	info := data.magtape.lib.messages.failure("node-port-range", "MED", "MT2002", text, {"namespace": data.magtape.lib.request.namespace, "annotation": annotation})
}

deny contains info if {
	matches
	not unrestricted
	well_formed
	some port in data.magtape.lib.workloads.list(input.request.object.spec, "ports")
	node_port := port.nodePort
	is_number(node_port)
	node_port != 0 # not allocated yet
	not allowed(node_port)
	text := concat("", ["nodePort ", data.magtape.lib.messages.str(node_port), " is out of defined range for Service ", data.magtape.lib.messages.quoted(data.magtape.lib.request.object_name)])
	info := data.magtape.lib.messages.failure("node-port-range", "MED", "MT2002", text, {"nodePort": node_port, "allowed": annotation})
}
