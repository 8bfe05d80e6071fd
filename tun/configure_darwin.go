package tun

func newPlatform(c *configurator) (platform, error) {
	return &execPlatform{run: c.opts.Run, planCmds: macOSPlan}, nil
}
