// Package e2e runs the lab end to end: the connectivity matrix, failover and
// healing, agent crashes, churn and API-server outages.
package e2e
