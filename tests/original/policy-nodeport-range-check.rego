# A policy in the original MagTape's format (Rego v0), written for the tests:
# nodePorts must fall in the range a namespace annotation allows, with the
# original's deprecated builtin (re_match) and else chain, which `magtape
# policy convert` must carry over to Rego v1 (tests/test_convert.py).
package kubernetes.admission.policy_nodeport_range

import data.kubernetes.namespaces

policy_metadata = {
	"name": "policy-nodeport-range",
	"severity": "MED",
	"errcode": "MT2002",
	"targets": {"Service"},
}

kind = input.request.kind.kind

matches {
	policy_metadata.targets[kind]
	input.request.object.spec.type == "NodePort"
}

deny[info] {
	ns := input.request.namespace
	port := input.request.object.spec.ports[_]
	np := port.nodePort
	allowed := namespaces[ns].metadata.annotations["k8s.t-mobile.com/nodeportRange"]
	verdict := range_verdict(np, allowed)
	msg := sprintf("[FAIL] %v - nodePort %v %v for Service \"%v\" (%v)", [policy_metadata.severity, np, verdict, input.request.object.metadata.name, policy_metadata.errcode])
	info := {
		"name": policy_metadata.name,
		"severity": policy_metadata.severity,
		"errcode": policy_metadata.errcode,
		"msg": msg,
	}
}

range_verdict(np, allowed) = "is out of defined range" {
	re_match(`^[0-9]+-[0-9]+$`, trim_space(allowed))
	bounds := split(trim_space(allowed), "-")
	not within(np, bounds)
} else = "is not in the single allowed port" {
	re_match(`^[0-9]+$`, trim_space(allowed))
	to_number(trim_space(allowed)) != np
}

within(np, bounds) {
	np >= to_number(bounds[0])
	np <= to_number(bounds[1])
}
