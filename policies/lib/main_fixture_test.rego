# A stand-in policy for the tests of data.magtape.main: it only matches the
# made-up kind "MagTapeFixture", so it never shows up for a real request.
package kubernetes.admission.magtape_main_fixture

import rego.v1

policy_metadata := {"name": "magtape-main-fixture", "severity": "LOW", "errcode": "MT0000", "targets": {"MagTapeFixture"}}

matches if input.request.kind.kind in policy_metadata.targets

deny contains {"name": "magtape-main-fixture", "severity": "LOW", "errcode": "MT0000", "msg": "[FAIL] LOW - fixture (MT0000)"} if {
	matches
	input.request.object.spec.fail == true
}
