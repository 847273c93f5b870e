from trainer.tools.train import main

main()
