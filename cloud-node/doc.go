// Package cloudnode is the cloud role: the ECS metadata client, the ENI
// manager over alibaba-cloud-sdk-go (rate-limited, idempotent, with a warm IP
// pool and GC of leaks), and the ENI datapaths (ENIIP over ipvlan where the
// kernel has it, else veth + policy routing; exclusive ENI). It knows nothing
// of BGP or VXLAN.
package cloudnode
