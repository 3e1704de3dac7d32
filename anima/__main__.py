from anima.cli.short import main

main()
