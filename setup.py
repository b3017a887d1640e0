"""hrnet_mm: one HRNet for mmsegmentation, mmpose and mmdetection."""
from setuptools import find_packages, setup

setup(
    name='hrnet_mm',
    version='0.1.0',
    description='One HRNet backbone and its representation necks for the OpenMMLab stack',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['hrnet_mm', 'hrnet_mm.*']),
    python_requires='>=3.8',
    # The pinned stack (torch, mmcv with ops, mmseg, mmdet, mmpose) is installed by
    # tools/bootstrap.sh; only what every user already has is declared here.
    install_requires=['torch', 'mmengine>=0.10', 'mmcv>=2.0.0'],
    license='Apache-2.0',
)
