from p2pshare.cli.main import main

main()
