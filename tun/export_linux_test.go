package tun

// CreateWithoutOffload exposes createWithoutOffload to the namespace tests.
var CreateWithoutOffload = createWithoutOffload
