"""hrnet_mm: one HRNet for mmsegmentation, mmpose and mmdetection."""
from setuptools import find_packages, setup


def requirements(name):
    with open(f'requirements/{name}.txt', encoding='utf-8') as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='hrnet_mm',
    version='0.1.0',
    description='One HRNet backbone and its representation necks for the OpenMMLab stack',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['hrnet_mm', 'hrnet_mm.*']),
    include_package_data=True,
    package_data={'hrnet_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                               '.mim/configs/*.py', '.mim/configs/*.yml']},
    python_requires='>=3.9',
    # Floors are what the code needs: torch 2.5 (torch.serialization.safe_globals, the
    # dynamo ONNX exporter with dynamic shapes), mmengine 0.10, mmcv 2.0. Tested with exactly
    # the stack tools/bootstrap.sh installs (torch 2.13.0, mmengine 0.10.7, mmcv 2.1.0,
    # mmsegmentation 1.2.2, mmdet 3.3.0, mmpose 1.3.2).
    install_requires=['torch>=2.5', 'mmengine>=0.10', 'mmcv>=2.0.0', 'numpy'],
    extras_require={
        'seg': ['mmsegmentation>=1.2'],
        'det': ['mmdet>=3.3'],
        'pose': ['mmpose>=1.3'],
        'deploy': requirements('deploy'),
    },
    license='Apache-2.0',
)
