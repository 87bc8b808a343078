from mvgen.app import main

main()
