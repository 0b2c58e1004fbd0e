# MT1007 singleton-pod: a Pod is created by a controller (Deployment, Job,
# ...), not on its own; a bare Pod is not rescheduled when its node goes away.
# See README.md in this folder.
package kubernetes.admission.singleton_pod

import rego.v1

policy_metadata := {
	"name": "singleton-pod",
	"severity": "LOW",
	"errcode": "MT1007",
	"targets": {"Pod"},
}

# policy_metadata.targets, tested with == rather than `in`, which would
# build the targets set on every request. Only when the Pod is created: its
# owner references go away afterwards only because a controller releases or
# orphans it (a ReplicaSet whose selector no longer matches the Pod's labels,
# `kubectl delete --cascade=orphan`), and denying that UPDATE would block the
# controller, not whoever wrote the Pod.
matches if {
	input.request.kind.kind == "Pod"
	object.get(input.request, "operation", "CREATE") != "UPDATE"
}

deny contains info if {
	matches
	count(data.magtape.lib.workloads.owner_references) == 0
	text := concat("", [data.magtape.lib.messages.quoted(data.magtape.lib.request.object_name), " is a singleton pod."])

	# No details: the message names the Pod. The identity is written out
	# rather than read from policy_metadata, as for data.magtape.lib.messages.failure.
	info := {"name": "singleton-pod", "severity": "LOW", "errcode": "MT1007", "msg": data.magtape.lib.messages.fail_message("LOW", text, "MT1007")}
}
