package gateway

import (
	"net/http"

	"github.com/shardgate/shardgate/pkg/membership"
)

type ownerJSON struct {
	Key      string `json:"key"`
	Shard    uint32 `json:"shard"`
	Owner    string `json:"owner"`
	LinkAddr string `json:"link_addr"`
}

func (g *Gateway) routes() {
	g.admin.HandleJSON("/debug/cluster", func(*http.Request) (any, int) {
		var members []membership.Member
		if g.members != nil {
			members = g.members.Members()
		}
		v := membership.NewClusterView(g.cfg.Name, members)
		v.Ring = &membership.RingJSON{Shards: g.ring.Shards(), Version: g.ring.Version(), Workers: g.ring.ShardCounts()}
		return v, http.StatusOK
	})
	g.admin.HandleJSON("/debug/owner", func(r *http.Request) (any, int) {
		key := r.URL.Query().Get("key")
		if key == "" {
			return map[string]string{"error": "missing query parameter key, for example /debug/owner?key=dev1"}, http.StatusBadRequest
		}
		shard, owner, ok := g.ring.LookupString(key)
		if !ok {
			return map[string]any{"key": key, "shard": shard, "error": "no active worker"}, http.StatusServiceUnavailable
		}
		return ownerJSON{Key: key, Shard: shard, Owner: owner.Name, LinkAddr: owner.Addr}, http.StatusOK
	})
	if g.diam != nil {
		g.admin.HandleJSON("/debug/peers", func(*http.Request) (any, int) {
			return g.diam.Peers(), http.StatusOK
		})
	}
}
