package api

// BGPPeer is one BGP session, as BGPPeersPath serves it.
type BGPPeer struct {
	Peer     string `json:"peer"`
	ASN      uint32 `json:"asn"`
	State    string `json:"state"`
	Since    string `json:"since,omitempty"`
	Flaps    uint32 `json:"flaps"`
	Received uint64 `json:"received"`
	Sent     uint64 `json:"sent"`
	// Rejected counts prefixes the import policy keeps out of the kernel,
	// per reason; RejectedExample is one of each with why.
	Rejected        map[string]uint64 `json:"rejected,omitempty"`
	RejectedExample map[string]string `json:"rejectedExample,omitempty"`
	MaxPrefixes     uint32            `json:"maxPrefixes"`
	OverLimit       bool              `json:"overLimit,omitempty"`
	BadUpdates      uint64            `json:"badUpdates,omitempty"`
	LastBadUpdate   string            `json:"lastBadUpdate,omitempty"`
	Reason          string            `json:"reason,omitempty"`
}

// BGPInstall is the route installer's state, as BGPInstallPath serves it.
type BGPInstall struct {
	// FailingRoutes is how many learned routes the kernel refuses right
	// now; Failing lists up to 100 of them.
	FailingRoutes int              `json:"failingRoutes"`
	Failing       []BGPFailedRoute `json:"failing,omitempty"`
	ErrorsTotal   uint64           `json:"errorsTotal"`
	StaleWaiting  bool             `json:"staleWaiting,omitempty"`
	Stale         string           `json:"stale,omitempty"`
}

// BGPFailedRoute is one learned route the kernel refuses.
type BGPFailedRoute struct {
	Prefix    string   `json:"prefix"`
	NextHops  []string `json:"nextHops,omitempty"`
	Error     string   `json:"error"`
	Attempts  int      `json:"attempts"`
	Since     string   `json:"since"`
	NextRetry string   `json:"nextRetry"`
}
