from mvgen.app import main

if __name__ == "__main__":  # guarded: spawn-started worker processes import this module again
    main()
