package worker

import (
	"net/http"

	"github.com/shardgate/shardgate/pkg/membership"
)

func (w *Worker) routes() {
	w.admin.HandleJSON("/debug/cluster", func(*http.Request) (any, int) {
		var members []membership.Member
		if w.members != nil {
			members = w.members.Members()
		}
		return membership.NewClusterView(w.cfg.Name, members), http.StatusOK
	})
	w.admin.HandleJSON("/debug/sessions", func(*http.Request) (any, int) {
		return map[string]int{"devices": w.devices.Sessions(), "credit_control": w.ccStore.Len()}, http.StatusOK
	})
}
