from warmstart.cli.app import main

main()
