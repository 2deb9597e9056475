package membership

// memberJSON is one member in /debug/cluster.
type memberJSON struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	State    string `json:"state"`
	Status   string `json:"status"`
	SerfAddr string `json:"serf_addr"`
	LinkAddr string `json:"link_addr,omitempty"`
}

// RingJSON is the ring summary a gateway adds to /debug/cluster.
type RingJSON struct {
	Shards  int            `json:"shards"`
	Version uint64         `json:"version"`
	Workers map[string]int `json:"workers"`
}

// ClusterView is the body of /debug/cluster on both binaries.
type ClusterView struct {
	Self    string       `json:"self"`
	Members []memberJSON `json:"members"`
	Ring    *RingJSON    `json:"ring,omitempty"`
}

// NewClusterView renders a membership list for /debug/cluster.
func NewClusterView(self string, members []Member) ClusterView {
	out := ClusterView{Self: self, Members: make([]memberJSON, 0, len(members))}
	for _, m := range members {
		out.Members = append(out.Members, memberJSON{
			Name: m.Name, Role: string(m.Role), State: string(m.State),
			Status: m.Status, SerfAddr: m.SerfAddr, LinkAddr: m.LinkAddr,
		})
	}
	return out
}
