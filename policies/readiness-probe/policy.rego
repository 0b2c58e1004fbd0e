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

# Names of the containers without a readinessProbe (or with a null one).
# Containers are gathered in a comprehension, never iterated in a rule body,
# and never passed to a function (workloads.present): rego-cpp pays for the
# size of each container there (docs/policies.md, "Keeping a policy cheap").
missing_probe := [object.get(container, "name", "") |
	some container in workloads.containers
	not container.readinessProbe != null
]

deny contains info if {
	matches
	some name in missing_probe
	text := concat("", ["Readiness Probe missing for container ", messages.quoted(name)])
	info := messages.failure("readiness-probe", "LOW", "MT1002", text, {"container": name})
}
