# MT1001 liveness-probe: every container of a long-running workload declares
# a livenessProbe. See README.md in this folder.
package kubernetes.admission.liveness_probe

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "liveness-probe",
	"severity": "LOW",
	"errcode": "MT1001",
	"targets": workloads.long_running_kinds,
}

# Jobs, CronJobs and Job-owned Pods run to completion: no probes needed.
# workloads.long_running tests exactly policy_metadata.targets (and the
# owner), once per request for both probe checks.
matches if workloads.long_running

deny contains info if {
	matches
	some container in workloads.containers
	not workloads.present(container, "livenessProbe")
	name := object.get(container, "name", "")
	text := concat("", ["Liveness Probe missing for container ", messages.quoted(name)])
	info := messages.failure("liveness-probe", "LOW", "MT1001", text, {"container": name})
}
