module warmstart/sandbox-init

go 1.19
