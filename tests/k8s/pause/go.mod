module warmstart/pause

go 1.21
