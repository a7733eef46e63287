"""ezclip-jax: EZ-CLIP / T2L video action recognition in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8.6",
    "importlib_resources>=6.0",
    "ml-collections>=1.1.0",
    "absl-py>=2.1",
    "numpy>=2.0",
    "pillow>=10.0",
    "av>=14.0",
    "opencv-python-headless>=4.9",
    "simplejpeg>=1.9.0",  # JPEG frames decoded straight into the clip array
    "ftfy>=6.1",
    "regex>=2023.0",
    "matplotlib>=3.11",
    # Protos and record framing of TensorBoard event files, without TensorFlow (ezclip_jax/metrics.py).
    "tensorboard>=2.21",
]

EXTRAS_REQUIRE = {
    # libtpu, through jax's extra at the jax version this project is tested with: runs on
    # TPU VMs, and compiles steps for TPU slices on any machine (python -m ezclip_jax.plan).
    "tpu": ["jax[tpu]==0.10.2"],
    # torch 2.13.0 is the CPU build this machine installs cheaply; other
    # versions pull a multi-GB CUDA build.
    "convert": ["torch==2.13.0", "safetensors>=0.4"],
    "test": [
        "pytest>=8.0",
        "torch==2.13.0",
        "safetensors>=0.4",
        # open_clip_torch==3.3.0 is installed with --no-deps (see README): its
        # torchvision requirement would pull a CUDA torch; these are its other needs.
        "huggingface-hub>=0.20",
        "tqdm>=4.0",
        # Executes notebooks/colab_tpu.ipynb top to bottom in tests/test_notebook.py.
        "nbclient>=0.11.0",
        "nbformat>=5.11.1",
        "ipykernel>=7.4.0",
        # tests/test_plan.py compiles train steps for TPU slices (no TPU needed).
        "jax[tpu]==0.10.2",
    ],
}

setuptools.setup(
    name="ezclip-jax",
    version="0.1.0",
    description="EZ-CLIP / T2L efficient zero-shot video action recognition in JAX/Flax",
    packages=setuptools.find_packages(include=["ezclip_jax", "ezclip_jax.*"]),
    package_data={"ezclip_jax": ["assets/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
