"""One module per verb: parse arguments, make one library call, render the result."""
