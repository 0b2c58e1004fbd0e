# A policy in the original MagTape's format (Rego v0), written for the tests:
# the shape, package, message and metadata of the original's
# policy-privileged-pod-check, which `magtape policy convert` must carry
# over to Rego v1 without changing a decision (tests/test_convert.py).
package kubernetes.admission.policy_privileged_pod

policy_metadata = {
	# MagTape policy info
	"name": "policy-privileged-pod",
	"severity": "HIGH",
	"errcode": "MT2001",
	"targets": {"Deployment", "StatefulSet", "DaemonSet", "Pod"},
}

servicetype = input.request.kind.kind

matches {
	policy_metadata.targets[servicetype]
}

deny[info] {
	containers := find_containers(servicetype, policy_metadata)
	container := containers[_]
	name := container.name
	container.securityContext.privileged

	msg = sprintf("[FAIL] %v - Found privileged Security Context for container \"%v\" (%v)", [policy_metadata.severity, name, policy_metadata.errcode])

	info := {
		"name": policy_metadata.name,
		"severity": policy_metadata.severity,
		"errcode": policy_metadata.errcode,
		"msg": msg,
	}
}

# The containers of a Pod, or of a workload's pod template.
find_containers(kind, meta) = input.request.object.spec.containers {
	kind == "Pod"
} else = input.request.object.spec.template.spec.containers {
	meta.targets[kind]
}
