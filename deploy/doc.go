// Package deploy holds no code: it is the home of Strata's install artefacts
// (plain manifests, the Helm chart, the agent's Dockerfile) and of the tests
// that keep them honest against the code and a real API server:
//
//   - manifests_test.go: every manifest decodes strictly; the DaemonSet, the
//     ConfigMap and the chart agree with the agent's flags, defaults and the
//     CNI plugin's config parser; the RBAC is exactly what the agent calls.
//   - derive_test.go: those calls, derived by type-checking every package
//     strata-agent links; calls_test.go says why each is made.
//   - dockerfile_test.go: the Dockerfile's stages are parsed and checked
//     against `make build`; the integration variant runs them without Docker.
//   - deploy_integration_test.go: server-side apply of every manifest and of
//     the rendered chart, CRD rejection of invalid objects, and the agent's
//     calls made as its ServiceAccount under the shipped RBAC.
package deploy
