from secmon.cli.main import main

main()
