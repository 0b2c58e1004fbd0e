# MT1002 readiness-probe: every container of a long-running workload declares
# a readinessProbe. See README.md in this folder.
package kubernetes.admission.readiness_probe

import rego.v1

import data.magtape.lib.messages
import data.magtape.lib.workloads

policy_metadata := {
	"name": "readiness-probe",
	"severity": "LOW",
	"errcode": "MT1002",
	"targets": workloads.long_running_kinds,
}

# Jobs, CronJobs and Job-owned Pods run to completion: no probes needed.
# workloads.long_running tests exactly policy_metadata.targets (and the
# owner), once per request for both probe checks.
matches if workloads.long_running

deny contains info if {
	matches
	some container in workloads.containers
	not workloads.present(container, "readinessProbe")
	name := object.get(container, "name", "")
	text := concat("", ["Readiness Probe missing for container ", messages.quoted(name)])
	info := messages.failure("readiness-probe", "LOW", "MT1002", text, {"container": name})
}
