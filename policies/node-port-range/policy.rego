# MT2002 node-port-range: a NodePort or LoadBalancer Service only uses the
# node ports its namespace was given in the annotation
# k8s.t-mobile.com/nodeportRange. See README.md in this folder.
package kubernetes.admission.node_port_range

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.request
import data.magtape.lib.workloads

policy_metadata := {
	"name": "node-port-range",
	"severity": "MED",
	"errcode": "MT2002",
	"targets": {"Service"},
}

annotation_key := "k8s.t-mobile.com/nodeportRange"

# Only NodePort and LoadBalancer Services open node ports. (The kind is
# policy_metadata.targets, tested with == rather than `in`: rego-cpp would
# build the targets set on every request.)
matches if {
	input.request.kind.kind == "Service"
	input.request.object.spec.type in {"NodePort", "LoadBalancer"}
}

# The namespace's annotation, from the replicated cluster data (kube-mgmt
# layout) or, offline, from a data file. Undefined: no restriction.
# (Read through `namespaces` first: rego-cpp 1.5 loses a test's
# `with data.kubernetes.namespaces as ...` when the path is indexed directly.)
namespaces := data.kubernetes.namespaces

annotation := namespaces[request.namespace].metadata.annotations[annotation_key]

# The annotation with its whitespace removed ("30100 - 30200" = "30100-30200").
spec := regex.replace(annotation, `\s`, "")

unrestricted if not annotation

unrestricted if lower(spec) == "na"

# A port ("30100"), a range ("30100-30200"), or a comma-separated list of them.
well_formed if {
	regex.match(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`, spec)
	every range in ranges {
		range.low <= range.high
	}
}

ranges contains {"low": to_number(bounds[0]), "high": to_number(bounds[count(bounds) - 1])} if {
	some part in split(spec, ",")
	bounds := split(part, "-")
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
	text := concat("", ["Invalid data in nodePort annotation in ", messages.quoted(request.namespace), " namespace"])
	info := messages.failure("node-port-range", "MED", "MT2002", text, {"namespace": request.namespace, "annotation": annotation})
}

deny contains info if {
	matches
	not unrestricted
	well_formed
	some port in workloads.list(input.request.object.spec, "ports")
	node_port := port.nodePort
	is_number(node_port)
	node_port != 0 # not allocated yet
	not allowed(node_port)
	text := concat("", ["nodePort ", messages.str(node_port), " is out of defined range for Service ", messages.quoted(request.object_name)])
	info := messages.failure("node-port-range", "MED", "MT2002", text, {"nodePort": node_port, "allowed": annotation})
}
