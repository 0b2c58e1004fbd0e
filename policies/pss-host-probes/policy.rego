# MT3012 pss-host-probes: Pod Security Standards, baseline, v1.34+ - probes
# and lifecycle hooks do not name a host (they could reach the node or any
# address from the kubelet). See README.md in this folder.
package kubernetes.admission.pss_host_probes

import rego.v1

policy_metadata := {
	"name": "pss-host-probes",
	"severity": "HIGH",
	"errcode": "MT3012",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
	data.magtape.lib.pod_security.version >= 34
}

# The handler paths below a container that can carry a host.
handlers := [
	["livenessProbe"], ["readinessProbe"], ["startupProbe"],
	["lifecycle", "postStart"], ["lifecycle", "preStop"],
]

# [container, ["livenessProbe.httpGet.host=\"10.0.0.1\"", ...]].
host_users := [[c, found] |
	some c in data.magtape.lib.pod_security.containers
	found := [concat("", [concat(".", path), ".", action, ".host=", data.magtape.lib.pod_security.quoted(host)]) |
		some path in handlers
		handler := object.get(c.container, path, null)
		is_object(handler)
		some action in ["httpGet", "tcpSocket"]
		host := object.get(handler, [action, "host"], "")
		host != ""
		host != null
	]
	count(found) > 0
]

deny contains info if {
	matches
	some [c, found] in host_users
	info := data.magtape.lib.pod_security.container_failure(
		"pss-host-probes", "MT3012", "baseline", c, "*.host",
		concat("", ["sets ", concat(", ", found)]), "no host in probes and lifecycle hooks (empty or unset)",
	)
}
