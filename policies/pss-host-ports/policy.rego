# MT3006 pss-host-ports: Pod Security Standards, baseline, v1.0+ - no
# container binds a port of the node. In a namespace under a PSS level this
# check reports what MT1008 host-port reports elsewhere (docs/pod-security.md).
# See README.md in this folder.
package kubernetes.admission.pss_host_ports

import rego.v1

policy_metadata := {
	"name": "pss-host-ports",
	"severity": "HIGH",
	"errcode": "MT3006",
	"targets": data.magtape.lib.workloads.kinds,
}

matches if {
	data.magtape.lib.workloads.is_workload
	data.magtape.lib.pod_security.baseline_applies
}

# [container, its host ports as text].
host_port_users := [[c, ports] |
	some c in data.magtape.lib.pod_security.containers
	ports := [data.magtape.lib.pod_security.text(port.hostPort) |
		some port in data.magtape.lib.workloads.list(c.container, "ports")
		data.magtape.lib.workloads.present(port, "hostPort")
		port.hostPort != 0
	]
	count(ports) > 0
]

deny contains info if {
	matches
	some [c, ports] in host_port_users
	info := data.magtape.lib.pod_security.container_failure(
		"pss-host-ports", "MT3006", "baseline", c, "ports[*].hostPort",
		concat("", ["sets ports[*].hostPort=", concat(", ", ports)]), "0 or unset",
	)
}
