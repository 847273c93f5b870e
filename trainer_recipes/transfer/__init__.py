"""VGG16 transfer learning on an image folder: frozen backbone, then fine-tuning."""
